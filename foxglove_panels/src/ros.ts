// Names and shapes the panels share: the ROS topics and services of h1_training (msg_srv/), as Foxglove delivers
// them from either bridge (our foxglove_gateway's JSON or foxglove_bridge's CDR decode to the same objects).
// Pure module: no Foxglove or DOM imports.

export type Stamp = { sec: number; nanosec: number };

export const TOPICS = {
  sessionStatus: "/hil_session/status",
  recorderStatus: "/episode_recorder/status",
  cameraStatus: "/camera/status",
  workflowStatus: "/training_workflow/status",
  trainerStatus: "/lerobot/trainer_status",
  trainingStats: "/lerobot/training_stats",
  performance: "/lerobot/performance_analytics",
  datasetList: "/lerobot/dataset_list",
  comparisonStatus: "/model_comparison/status",
  playbackStatus: "/playback/status",
} as const;

// Services the panels call. /training_workflow/{pause,resume,cancel}_training, /training_workflow/deploy_model and
// the /playback/* and episode delete/flag names are the contract proposed to the workflow/dataset issue (9); the
// others exist on main (hil_session, model_comparison, dataset_manager).
export const SERVICES = {
  sessionCommand: "/hil_session/command",
  sessionLabel: "/hil_session/label",
  triggerTraining: "/training_workflow/trigger_training",
  pauseTraining: "/training_workflow/pause_training",
  resumeTraining: "/training_workflow/resume_training",
  cancelTraining: "/training_workflow/cancel_training",
  deployModel: "/training_workflow/deploy_model",
  refreshDatasets: "/lerobot/refresh_datasets",
  episodeInfo: "/lerobot/get_episode_info",
  exportDataset: "/lerobot/export_dataset",
  deleteEpisode: "/lerobot/delete_episode",
  flagEpisode: "/lerobot/flag_episode",
  playbackPlay: "/playback/play",
  playbackPause: "/playback/pause",
  playbackStep: "/playback/step",
  playbackSeek: "/playback/seek",
  compareStart: "/model_comparison/start",
  compareStop: "/model_comparison/stop",
} as const;

/** What a panel can offer: Foxglove hides callService/setParameter when the data source has no such capability
 * (a recording, or a bridge without services). Buttons are offered only when the call can be made. */
export type Capabilities = { services: boolean; parameters: boolean };

export function capabilitiesOf(context: { callService?: unknown; setParameter?: unknown }): Capabilities {
  return {
    services: typeof context.callService === "function",
    parameters: typeof context.setParameter === "function",
  };
}

export type CallResult = { ok: boolean; message: string; response?: unknown };

/** Calls a service and turns every outcome into one line for the operator: a transport error (no such service,
 * timeout) and a ROS-level refusal (`success`/`accepted` false with a message) both read as failures. */
export async function callForOperator(
  call: ((service: string, request: unknown) => Promise<unknown>) | undefined,
  service: string,
  request: unknown,
): Promise<CallResult> {
  if (call == undefined) {
    return { ok: false, message: `${service}: this connection cannot call services` };
  }
  try {
    const response = await call(service, request);
    const r = (response ?? {}) as Record<string, unknown>;
    const refused = r.success === false || r.accepted === false;
    const text = typeof r.message === "string" && r.message !== "" ? r.message : refused ? "refused" : "done";
    return { ok: !refused, message: `${service}: ${text}`, response };
  } catch (err) {
    const text = err instanceof Error ? err.message : String(err);
    return { ok: false, message: `${service} failed: ${text}` };
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return "–";
  }
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
}

export function formatPercent(fraction: number, digits = 0): string {
  return Number.isFinite(fraction) && fraction >= 0 ? `${(fraction * 100).toFixed(digits)}%` : "–";
}

/** Latest message per topic from a render's currentFrame (older ones in the same frame are superseded). */
export function latestByTopic(
  frame: readonly { topic: string; message: unknown }[] | undefined,
  into: Map<string, unknown>,
): boolean {
  let changed = false;
  for (const event of frame ?? []) {
    into.set(event.topic, event.message);
    changed = true;
  }
  return changed;
}
