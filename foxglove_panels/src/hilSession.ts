// HIL Session panel logic: the session's state and prompt, the operator's keys, recorder health and cameras.
import { type RecorderStatus, recorderView, type RecorderView } from "./recorderStatus";
import { SERVICES } from "./ros";

export type SessionStatus = {
  state: number;
  state_name: string;
  prompt: string;
  allowed_keys: string[];
  epoch: number;
  server_epoch: number;
  server_ready: boolean;
  episode_index: number;
  episodes_saved: number;
  episodes_total: number;
  label: number;
  recording: boolean;
  policy_running: boolean;
  arm_mode: string;
  model_version: string;
  message: string;
  last_error: string;
};

export type CameraStatus = {
  names: string[];
  connected: boolean[];
  placeholder: boolean[];
  rate_hz: number[];
  detail: string[];
};

export const KEYS = [
  { key: "y", label: "y: yes / start" },
  { key: "n", label: "n: no / skip" },
  { key: "s", label: "s: stop policy (damping)" },
  { key: "e", label: "e: end episode" },
] as const;

export type KeyButton = { key: string; label: string; enabled: boolean };

export type HilView = {
  title: string;
  prompt: string;
  details: string[];
  error: string;
  keys: KeyButton[];
  canLabel: boolean;
  recorder: RecorderView;
  cameras: { name: string; ok: boolean; line: string }[];
};

export function hilView(
  session: SessionStatus | undefined,
  recorder: RecorderStatus | undefined,
  cameras: CameraStatus | undefined,
  canCall: boolean,
): HilView {
  const allowed = new Set(session?.allowed_keys ?? []);
  const keys = KEYS.map(({ key, label }) => ({ key, label, enabled: canCall && allowed.has(key) }));
  const camerasView = (cameras?.names ?? []).map((name, i) => {
    const ok = (cameras?.connected[i] ?? false) && !(cameras?.placeholder[i] ?? false);
    const rate = cameras?.rate_hz[i];
    return { name, ok, line: `${name}: ${ok ? "ok" : "NO FRAMES"} ${rate != undefined ? rate.toFixed(0) : "?"} Hz` };
  });
  if (session == undefined) {
    return {
      title: "no session status yet",
      prompt: "is hil_session running? (topic /hil_session/status)",
      details: [],
      error: "",
      keys,
      canLabel: false,
      recorder: recorderView(recorder),
      cameras: camerasView,
    };
  }
  const label = session.label === 1 ? "success" : session.label === 0 ? "failure" : "unlabelled";
  return {
    title: session.state_name,
    prompt: session.prompt,
    details: [
      `epoch ${session.epoch} (server ${session.server_epoch}, ${session.server_ready ? "ready" : "training"})`,
      `model ${session.model_version || "–"}`,
      `episode ${session.episode_index} · saved ${session.episodes_saved} this epoch, ${session.episodes_total} total`,
      `last label: ${label} · arm ${session.arm_mode || "?"}${session.policy_running ? " · policy running" : ""}`,
      session.message,
    ].filter((line) => line !== ""),
    error: session.last_error,
    keys,
    canLabel: canCall && session.state_name === "LABELING",
    recorder: recorderView(recorder),
    cameras: camerasView,
  };
}

export function keyRequest(key: string): { service: string; request: { key: string } } {
  if (!KEYS.some((k) => k.key === key)) {
    throw new Error(`unknown key ${key}`);
  }
  return { service: SERVICES.sessionCommand, request: { key } };
}

export function labelRequest(success: boolean): {
  service: string;
  request: { success: number; note: string; file_path: string };
} {
  return { service: SERVICES.sessionLabel, request: { success: success ? 1 : 0, note: "", file_path: "" } };
}
