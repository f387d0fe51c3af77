import { describe, expect, it } from "vitest";

import { playbackRequest } from "./datasetBrowser";
import { hilView, keyRequest } from "./hilSession";
import { parseModels, selectionProblem } from "./modelComparison";
import { callForOperator, capabilitiesOf, formatDuration } from "./ros";
import { polyline, TrainingHistory } from "./trainingDashboard";

describe("ros helpers", () => {
  it("formats durations and refuses nonsense", () => {
    expect(formatDuration(9252)).toBe("2:34:12");
    expect(formatDuration(-1)).toBe("–");
  });

  it("checks callService and setParameter exist", () => {
    expect(capabilitiesOf({})).toEqual({ services: false, parameters: false });
    expect(capabilitiesOf({ callService: () => 1, setParameter: () => 1 })).toEqual({ services: true,
      parameters: true });
  });

  it("turns refusals and transport errors into operator lines", async () => {
    expect(await callForOperator(undefined, "/x", {})).toMatchObject({ ok: false });
    expect(await callForOperator(async () => ({ accepted: false, message: "not now" }), "/x", {}))
      .toEqual({ ok: false, message: "/x: not now", response: { accepted: false, message: "not now" } });
    expect(await callForOperator(async () => { throw new Error("timeout"); }, "/x", {}))
      .toEqual({ ok: false, message: "/x failed: timeout" });
  });
});

describe("panel logic", () => {
  it("keeps one loss curve per job, in step order", () => {
    const h = new TrainingHistory(3);
    const s = { job_id: "a", epoch: 1, total_epochs: 2, total_steps: 10, learning_rate: 1, steps_per_second: 1,
      eta_s: 1 };
    for (const [step, loss] of [[1, 1], [2, 0.5], [2, 0.4], [3, NaN], [4, 0.3], [5, 0.2]] as const) {
      h.addStats({ ...s, step, loss });
    }
    expect(h.loss.map((p) => p.x)).toEqual([2, 4, 5]);
    h.addStats({ ...s, job_id: "b", step: 1, loss: 2 });
    expect(h.loss).toEqual([{ x: 1, y: 2 }]);
    expect(polyline([{ x: 0, y: 0 }, { x: 1, y: 1 }], 10, 10)).toBe("0.0,10.0 10.0,0.0");
  });

  it("rejects unknown keys, bad seeks and bad selections", () => {
    expect(() => keyRequest("x")).toThrow("unknown key");
    const ep = { dataset: "d", index: 0, path: "/p", frames: 1, duration_s: 2, fps: 50, policy_frames: 0,
      human_frames: 0, missed_ticks: 0, success: -1, quality_score: 1, model_version: "", problems: [] };
    expect(() => playbackRequest("seek", ep, 3)).toThrow("outside the episode");
    expect(playbackRequest("seek", ep, 1.5).request).toEqual({ time_s: 1.5 });
    expect(parseModels(" v1,v2  v1 v3")).toEqual(["v1", "v2", "v3"]);
    expect(selectionProblem(["a", "b", "c", "d", "e"], "detailed")).toContain("2 to 4");
    expect(selectionProblem(["a", "b", "c"], "detailed")).toBeUndefined();
  });

  it("enables no key without services", () => {
    const view = hilView({ state: 0, state_name: "WAITING", prompt: "", allowed_keys: ["y"], epoch: 0,
      server_epoch: 0, server_ready: true, episode_index: 0, episodes_saved: 0, episodes_total: 0, label: -1,
      recording: false, policy_running: false, arm_mode: "", model_version: "", message: "", last_error: "" },
    undefined, undefined, false);
    expect(view.keys.every((k) => !k.enabled)).toBe(true);
  });
});
