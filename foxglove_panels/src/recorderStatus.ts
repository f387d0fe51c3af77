// Pure view-model for the recorder status panel: turns an h1_training_interfaces/RecorderStatus message into
// the lines an operator reads. No Foxglove or DOM imports, so it is unit-tested with vitest.

export type RecorderStatus = {
  state: number;
  recording: boolean;
  file_path: string;
  frames: number;
  policy_frames: number;
  human_frames: number;
  missed_ticks: number;
  target_rate_hz: number;
  achieved_rate_hz: number;
  bytes_written: number;
  duration_s: number;
  stale_sources: string[];
  error: string;
};

// RecorderStatus.STATE_* constants (msg_srv/msg/RecorderStatus.msg)
const STATE_NAMES = ["IDLE", "RECORDING", "SAVING", "ERROR"];

export type Severity = "ok" | "warn" | "error";

export type RecorderView = {
  title: string;
  severity: Severity;
  lines: string[];
};

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) {
    return "?";
  }
  const units = ["B", "kB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function recorderView(status: RecorderStatus | undefined): RecorderView {
  if (status == undefined) {
    return { title: "no recorder status yet", severity: "warn", lines: ["is episode_recorder running?"] };
  }
  const state = STATE_NAMES[status.state] ?? `state ${status.state}`;
  let severity: Severity = "ok";
  const lines: string[] = [];
  if (status.error !== "") {
    severity = "error";
    lines.push(`error: ${status.error}`);
  }
  lines.push(
    `${status.frames} frames (policy ${status.policy_frames}, human ${status.human_frames}), ` +
      `${status.duration_s.toFixed(1)} s`,
  );
  const rateLow = status.recording && status.achieved_rate_hz < 0.99 * status.target_rate_hz;
  lines.push(`rate ${status.achieved_rate_hz.toFixed(1)} / ${status.target_rate_hz.toFixed(0)} Hz`);
  if (status.missed_ticks > 0 || rateLow) {
    severity = severity === "error" ? severity : "warn";
    lines.push(`missed ticks: ${status.missed_ticks}`);
  }
  if (status.stale_sources.length > 0) {
    severity = severity === "error" ? severity : "warn";
    lines.push(`stale: ${status.stale_sources.join(", ")}`);
  }
  lines.push(`${formatBytes(status.bytes_written)} → ${status.file_path || "(no file)"}`);
  return { title: state, severity, lines };
}
