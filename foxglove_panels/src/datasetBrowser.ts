// Dataset Browser logic (RoArm seed): datasets -> episodes with quality scores and details, playback controls,
// delete/flag, export. Episodes come from /lerobot/get_episode_info (one call per index of the chosen dataset).
import { formatDuration, formatPercent, SERVICES } from "./ros";

export type DatasetInfo = { name: string; path: string; format: string; num_episodes: number; total_frames: number;
  duration_s: number; fps: number; size_mb: number; quality_score: number; success_rate: number;
  problems: string[] };
export type DatasetList = { datasets: DatasetInfo[] };
export type EpisodeInfo = { dataset: string; index: number; path: string; frames: number; duration_s: number;
  fps: number; policy_frames: number; human_frames: number; missed_ticks: number; success: number;
  quality_score: number; model_version: string; problems: string[] };
/** /playback/status (msg_srv/msg/PlaybackStatus.msg). */
export type PlaybackStatus = { state?: number; state_name?: string; dataset?: string; index?: number; path?: string;
  frame?: number; frames?: number; time_s?: number; duration_s?: number; speed?: number; message?: string };

export function datasetLine(ds: DatasetInfo): string {
  const quality = ds.quality_score >= 0 ? `quality ${ds.quality_score.toFixed(0)}%` : "quality –";
  return `${ds.name} · ${ds.num_episodes} episodes · ${ds.total_frames} frames · ` +
    `${formatDuration(ds.duration_s)} · ${ds.size_mb.toFixed(1)} MB · ${quality} · success ` +
    `${formatPercent(ds.success_rate)}`;
}

const SUCCESS = { [-1]: "unlabelled", 0: "failure", 1: "success" } as Record<number, string>;

export function episodeLine(ep: EpisodeInfo): string {
  return `#${ep.index} · ${ep.frames} frames · ${ep.duration_s.toFixed(1)} s · quality ${ep.quality_score.toFixed(0)}` +
    ` · ${SUCCESS[ep.success] ?? "?"} · policy ${ep.policy_frames} / human ${ep.human_frames}`;
}

export function episodeDetails(ep: EpisodeInfo): string[] {
  return [
    ep.path,
    `${ep.fps.toFixed(0)} Hz, ${ep.missed_ticks} missed ticks, model ${ep.model_version || "–"}`,
    ...ep.problems.map((p) => `problem: ${p}`),
  ];
}

/** Requests for the episodes of a dataset, in index order. */
export function episodeRequests(ds: DatasetInfo): { service: string; request: { dataset: string; index: number } }[] {
  return Array.from({ length: Math.max(0, ds.num_episodes) }, (_, index) => ({
    service: SERVICES.episodeInfo,
    request: { dataset: ds.name, index },
  }));
}

export type PlaybackAction = "play" | "pause" | "step" | "seek";

/** The call for a playback button. "play" resumes the episode already loaded (/playback/play) and otherwise loads
 * the chosen one and starts it (/playback/load with autoplay). */
export function playbackRequest(action: PlaybackAction, ep: EpisodeInfo, arg = 0, status?: PlaybackStatus):
  { service: string; request: Record<string, unknown> } {
  switch (action) {
    case "play":
      if (isLoaded(status, ep)) {
        return { service: SERVICES.playbackPlay, request: {} };
      }
      return { service: SERVICES.playbackLoad,
        request: { dataset: ep.dataset, index: ep.index, speed: arg > 0 ? arg : 1.0, autoplay: true } };
    case "pause":
      return { service: SERVICES.playbackPause, request: {} };
    case "step":
      return { service: SERVICES.playbackStep, request: { frames: arg === 0 ? 1 : Math.trunc(arg) } };
    case "seek":
      if (!(arg >= 0 && arg <= ep.duration_s)) {
        throw new Error(`seek to ${arg} s is outside the episode (0..${ep.duration_s.toFixed(1)} s)`);
      }
      return { service: SERVICES.playbackSeek, request: { frame: -1, time_s: arg } };
  }
}

/** Whether /playback/status shows this episode loaded and resumable (paused; a finished one is loaded again). */
export function isLoaded(status: PlaybackStatus | undefined, ep: EpisodeInfo): boolean {
  return status != undefined && status.dataset === ep.dataset && status.index === ep.index &&
    status.state_name === "paused";
}

export function exportRequest(ds: DatasetInfo, format: "lerobot" | "hdf5" | "mcap"):
  { service: string; request: { dataset: string; format: string; output_path: string } } {
  return { service: SERVICES.exportDataset, request: { dataset: ds.name, format, output_path: "" } };
}

type EpisodeAction = { dataset: string; index: number; value: boolean; note: string };

export function deleteRequest(ep: EpisodeInfo, note = "deleted from Foxglove"):
  { service: string; request: EpisodeAction } {
  return { service: SERVICES.deleteEpisode, request: { dataset: ep.dataset, index: ep.index, value: false, note } };
}

export function flagRequest(ep: EpisodeInfo, exclude: boolean, note = "flagged in Foxglove"):
  { service: string; request: EpisodeAction } {
  return { service: SERVICES.setEpisodeExcluded,
    request: { dataset: ep.dataset, index: ep.index, value: exclude, note } };
}

export function playbackLine(status: PlaybackStatus | undefined): string {
  if (status == undefined) {
    return "playback: idle";
  }
  const episode = status.dataset ? `${status.dataset} #${status.index ?? "?"}` : (status.path ?? "");
  return `playback: ${status.state_name ?? "?"} ${episode} frame ${status.frame ?? "?"}/${status.frames ?? "?"}`;
}
