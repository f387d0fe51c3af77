// @vitest-environment jsdom
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { FakeContext, mount } from "../testing/fakeContext";
import { initHilSessionPanel } from "./HilSessionPanel";

beforeAll(() => {
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
});

const waiting = { state: 0, state_name: "WAITING", prompt: "y: start epoch 1, n: skip", allowed_keys: ["y", "n"],
  epoch: 0, server_epoch: 0, server_ready: true, episode_index: -1, episodes_saved: 0, episodes_total: 0, label: -1,
  recording: false, policy_running: false, arm_mode: "HOLD", model_version: "scripted-v0", message: "",
  last_error: "" };
const recorder = { state: 1, recording: true, file_path: "/d/e.hdf5.partial", frames: 100, policy_frames: 100,
  human_frames: 0, missed_ticks: 0, target_rate_hz: 50, achieved_rate_hz: 50, bytes_written: 1000, duration_s: 2,
  stale_sources: [], error: "" };
const cameras = { names: ["ego_cam", "cam_left_wrist"], connected: [true, false], placeholder: [false, true],
  rate_hz: [30, 0], detail: ["", ""] };

let unmount: (() => void) | undefined;
afterEach(() => unmount?.());

describe("HIL Session panel", () => {
  it("stays responsive with no data and subscribes to the session, recorder and cameras", async () => {
    const fake = new FakeContext();
    unmount = await mount(initHilSessionPanel, fake);
    expect(fake.watched.has("currentFrame")).toBe(true);
    expect(fake.subscribed).toEqual(["/hil_session/status", "/episode_recorder/status", "/camera/status"]);
    await fake.render({});
    expect(fake.text()).toContain("no session status yet");
    expect(fake.button("y: yes").disabled).toBe(true);
    expect(fake.done).toBe(1);
  });

  it("shows state, prompt, recorder health and cameras; offers only the allowed keys", async () => {
    const fake = new FakeContext();
    unmount = await mount(initHilSessionPanel, fake);
    await fake.render({ "/hil_session/status": waiting, "/episode_recorder/status": recorder,
      "/camera/status": cameras });
    expect(fake.text()).toContain("WAITING");
    expect(fake.text()).toContain("y: start epoch 1, n: skip");
    expect(fake.text()).toContain("rate 50.0 / 50 Hz");
    expect(fake.text()).toContain("cam_left_wrist: NO FRAMES");
    expect(fake.button("y: yes").disabled).toBe(false);
    expect(fake.button("s: stop").disabled).toBe(true);
    expect(fake.button("label success").disabled).toBe(true);
  });

  it("sends the key to /hil_session/command and shows the session's refusal", async () => {
    const fake = new FakeContext();
    fake.handlers.set("/hil_session/command", () => ({ accepted: false, message: "no policy server",
      state_name: "WAITING", prompt: "" }));
    unmount = await mount(initHilSessionPanel, fake);
    await fake.render({ "/hil_session/status": waiting });
    await fake.click(fake.button("y: yes"));
    expect(fake.calls).toEqual([{ service: "/hil_session/command", request: { key: "y" } }]);
    expect(fake.text()).toContain("/hil_session/command: no policy server");
  });

  it("labels in LABELING and reports a transport error", async () => {
    const fake = new FakeContext();
    unmount = await mount(initHilSessionPanel, fake);
    await fake.render({ "/hil_session/status": { ...waiting, state_name: "LABELING", allowed_keys: [] } });
    await fake.click(fake.button("label failure"));
    expect(fake.calls[0]).toEqual({ service: "/hil_session/label", request: { success: 0, note: "",
      file_path: "" } });
    expect(fake.text()).toContain("/hil_session/label failed: Service /hil_session/label is not available");
  });

  it("offers no buttons when the connection cannot call services", async () => {
    const fake = new FakeContext(false);
    unmount = await mount(initHilSessionPanel, fake);
    await fake.render({ "/hil_session/status": waiting });
    expect(fake.panelElement.querySelectorAll("button").length).toBe(0);
    expect(fake.text()).toContain("cannot call services");
  });
});
