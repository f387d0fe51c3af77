// @vitest-environment jsdom
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { FakeContext, mount } from "../testing/fakeContext";
import { initDatasetBrowserPanel } from "./DatasetBrowserPanel";

beforeAll(() => {
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
});

const ds = { name: "training_session_epoch1", path: "/d/training_session_epoch1", format: "hdf5", num_episodes: 2,
  total_frames: 120, duration_s: 2.4, fps: 50, size_mb: 1.5, quality_score: 66.7, success_rate: 0.5, problems: [] };
const episode = (index: number) => ({ dataset: ds.name, index, path: `/d/training_session_epoch1/episode_${index}.hdf5`,
  frames: 60, duration_s: 1.2, fps: 50, policy_frames: 40, human_frames: 20, missed_ticks: 0, success: index,
  quality_score: 90 - index, model_version: "v1", problems: index === 1 ? ["cam_left_wrist placeholder 12%"] : [] });

let unmount: (() => void) | undefined;
afterEach(() => unmount?.());

describe("Dataset Browser panel", () => {
  it("says when there are no datasets", async () => {
    const fake = new FakeContext();
    unmount = await mount(initDatasetBrowserPanel, fake);
    await fake.render({});
    expect(fake.subscribed).toContain("/lerobot/dataset_list");
    expect(fake.text()).toContain("no datasets");
  });

  it("lists datasets, opens one into its episodes, shows details and drives playback and export", async () => {
    const fake = new FakeContext();
    fake.handlers.set("/lerobot/get_episode_info", (req) => ({ success: true, message: "",
      episode: episode((req as { index: number }).index) }));
    fake.handlers.set("/playback/play", () => ({ success: true, message: "playing" }));
    fake.handlers.set("/lerobot/export_dataset", () => ({ success: false, message: "export already running" }));
    unmount = await mount(initDatasetBrowserPanel, fake);
    await fake.render({ "/lerobot/dataset_list": { datasets: [ds] } });
    expect(fake.text()).toContain("training_session_epoch1 · 2 episodes · 120 frames");
    expect(fake.text()).toContain("quality 67%");
    await fake.click(fake.panelElement.querySelector("[data-dataset=training_session_epoch1]")!);
    expect(fake.calls.map((c) => c.request)).toEqual([{ dataset: ds.name, index: 0 }, { dataset: ds.name, index: 1 }]);
    expect(fake.text()).toContain("#1 · 60 frames · 1.2 s · quality 89 · success · policy 40 / human 20");
    await fake.click(fake.panelElement.querySelector("[data-episode='1']")!);
    expect(fake.text()).toContain("problem: cam_left_wrist placeholder 12%");
    await fake.click(fake.button("play"));
    expect(fake.calls.at(-1)).toEqual({ service: "/playback/play", request: { path: episode(1).path, speed: 1 } });
    expect(fake.text()).toContain("/playback/play: playing");
    await fake.click(fake.button("export HDF5"));
    expect(fake.text()).toContain("/lerobot/export_dataset: export already running");
  });
});
