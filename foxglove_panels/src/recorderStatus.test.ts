import { describe, expect, it } from "vitest";

import { formatBytes, recorderView, type RecorderStatus } from "./recorderStatus";

const base: RecorderStatus = {
  state: 1,
  recording: true,
  file_path: "/data/training_session_epoch1/episode_0.hdf5.partial",
  frames: 500,
  policy_frames: 300,
  human_frames: 200,
  missed_ticks: 0,
  target_rate_hz: 50,
  achieved_rate_hz: 50,
  bytes_written: 12_345_678,
  duration_s: 10,
  stale_sources: [],
  error: "",
};

describe("recorderView", () => {
  it("says when there is no status", () => {
    expect(recorderView(undefined).severity).toBe("warn");
  });

  it("is ok while recording at rate", () => {
    const view = recorderView(base);
    expect(view.title).toBe("RECORDING");
    expect(view.severity).toBe("ok");
    expect(view.lines.join("\n")).toContain("policy 300, human 200");
    expect(view.lines.join("\n")).toContain("12.3 MB");
  });

  it("warns on missed ticks and stale sources", () => {
    const view = recorderView({ ...base, missed_ticks: 3, stale_sources: ["cam_left_wrist"] });
    expect(view.severity).toBe("warn");
    expect(view.lines.join("\n")).toContain("stale: cam_left_wrist");
  });

  it("puts errors first", () => {
    const view = recorderView({ ...base, state: 3, error: "save_dir is not writable" });
    expect(view.title).toBe("ERROR");
    expect(view.severity).toBe("error");
    expect(view.lines[0]).toBe("error: save_dir is not writable");
  });
});

describe("formatBytes", () => {
  it("formats and rejects nonsense", () => {
    expect(formatBytes(999)).toBe("999 B");
    expect(formatBytes(1500)).toBe("1.5 kB");
    expect(formatBytes(-1)).toBe("?");
  });
});
