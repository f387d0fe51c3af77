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
export type PlaybackStatus = { episode?: string; path?: string; frame?: number; frames?: number; state_name?: string;
  time_s?: number };

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

export function playbackRequest(action: PlaybackAction, ep: EpisodeInfo, arg = 0):
  { service: string; request: Record<string, unknown> } {
  switch (action) {
    case "play":
      return { service: SERVICES.playbackPlay, request: { path: ep.path, speed: arg > 0 ? arg : 1.0 } };
    case "pause":
      return { service: SERVICES.playbackPause, request: {} };
    case "step":
      return { service: SERVICES.playbackStep, request: { frames: arg === 0 ? 1 : Math.trunc(arg) } };
    case "seek":
      if (!(arg >= 0 && arg <= ep.duration_s)) {
        throw new Error(`seek to ${arg} s is outside the episode (0..${ep.duration_s.toFixed(1)} s)`);
      }
      return { service: SERVICES.playbackSeek, request: { time_s: arg } };
  }
}

export function exportRequest(ds: DatasetInfo, format: "lerobot" | "hdf5" | "mcap"):
  { service: string; request: { dataset: string; format: string; output_path: string } } {
  return { service: SERVICES.exportDataset, request: { dataset: ds.name, format, output_path: "" } };
}

export function deleteRequest(ep: EpisodeInfo): { service: string; request: { path: string } } {
  return { service: SERVICES.deleteEpisode, request: { path: ep.path } };
}

export function flagRequest(ep: EpisodeInfo, exclude: boolean):
  { service: string; request: { path: string; exclude: boolean } } {
  return { service: SERVICES.flagEpisode, request: { path: ep.path, exclude } };
}

export function playbackLine(status: PlaybackStatus | undefined): string {
  if (status == undefined) {
    return "playback: idle";
  }
  return `playback: ${status.state_name ?? "?"} ${status.episode ?? status.path ?? ""} frame ${status.frame ?? "?"}/` +
    `${status.frames ?? "?"}`;
}
