// Training Dashboard logic (RoArm seed): epoch n/N, progress, live loss and success-rate curves, learning rate,
// ETA, start / pause / stop, the workflow's stage and recommendations.
import { formatDuration, formatPercent, SERVICES, type Stamp } from "./ros";

export type TrainerStatus = { state: number; state_name: string; job_id: string; policy_type: string;
  progress_pct: number; model_version: string; message: string };
export type TrainingStats = { header?: { stamp: Stamp }; job_id: string; epoch: number; total_epochs: number;
  step: number; total_steps: number; loss: number; learning_rate: number; steps_per_second: number; eta_s: number };
export type WorkflowStatus = { stage: number; stage_name: string; auto_train_enabled: boolean;
  episodes_collected: number; min_episodes_before_training: number; current_model_version: string;
  current_job_id: string; degradation_detected: boolean; recommendations: string[]; message: string };
export type PerformanceAnalytics = { header?: { stamp: Stamp }; model_version: string; recent_success_rate: number;
  window_trials: number; degradation_detected: boolean; recommendations: string[] };

export type Point = { x: number; y: number };

/** Keeps the curves of one job: loss by step, success rate by sample; a new job id starts new curves. */
export class TrainingHistory {
  jobId = "";
  loss: Point[] = [];
  success: Point[] = [];
  constructor(readonly maxPoints = 2000) {}

  addStats(stats: TrainingStats): void {
    if (stats.job_id !== this.jobId) {
      this.jobId = stats.job_id;
      this.loss = [];
    }
    const last = this.loss[this.loss.length - 1];
    if (Number.isFinite(stats.loss) && (last == undefined || stats.step > last.x)) {
      this.loss.push({ x: stats.step, y: stats.loss });
      if (this.loss.length > this.maxPoints) {
        this.loss.splice(0, this.loss.length - this.maxPoints);
      }
    }
  }

  addPerformance(perf: PerformanceAnalytics): void {
    if (Number.isFinite(perf.recent_success_rate) && perf.recent_success_rate >= 0) {
      this.success.push({ x: this.success.length, y: perf.recent_success_rate });
      if (this.success.length > this.maxPoints) {
        this.success.splice(0, this.success.length - this.maxPoints);
      }
    }
  }
}

// TrainerStatus.STATE_* (msg_srv/msg/TrainerStatus.msg)
const RUNNING = 2;
const PAUSED = 3;

export type DashboardView = {
  epochText: string;
  progressPct: number;
  lossText: string;
  learningRateText: string;
  etaText: string;
  stateText: string;
  stageText: string;
  recommendations: string[];
  buttons: { start: boolean; pause: boolean; resume: boolean; stop: boolean };
};

export function dashboardView(
  trainer: TrainerStatus | undefined,
  stats: TrainingStats | undefined,
  workflow: WorkflowStatus | undefined,
  perf: PerformanceAnalytics | undefined,
  canCall: boolean,
): DashboardView {
  const running = trainer?.state === RUNNING;
  const paused = trainer?.state === PAUSED;
  const progress = trainer?.progress_pct ??
    (stats && stats.total_steps > 0 ? (100 * stats.step) / stats.total_steps : 0);
  const recommendations = [...(workflow?.recommendations ?? []), ...(perf?.recommendations ?? [])];
  return {
    epochText: stats ? `epoch ${stats.epoch}/${stats.total_epochs} · step ${stats.step}/${stats.total_steps}`
      : "no training job yet",
    progressPct: Math.max(0, Math.min(100, progress)),
    lossText: stats && Number.isFinite(stats.loss) ? stats.loss.toFixed(4) : "–",
    learningRateText: stats ? stats.learning_rate.toExponential(2) : "–",
    etaText: stats ? formatDuration(stats.eta_s) : "–",
    stateText: trainer ? `${trainer.state_name}${trainer.job_id ? ` (${trainer.job_id})` : ""}` +
      `${trainer.message ? ` · ${trainer.message}` : ""}` : "trainer: no status (topic /lerobot/trainer_status)",
    stageText: workflow ? `${workflow.stage_name} · ${workflow.episodes_collected}/` +
      `${workflow.min_episodes_before_training} episodes · auto-train ${workflow.auto_train_enabled ? "on" : "off"}` +
      (perf ? ` · success ${formatPercent(perf.recent_success_rate)} (${perf.window_trials} trials)` : "")
      : "workflow: no status (topic /training_workflow/status)",
    recommendations,
    buttons: { start: canCall && !running && !paused, pause: canCall && running, resume: canCall && paused,
      stop: canCall && (running || paused) },
  };
}

export const ACTIONS = {
  start: { service: SERVICES.triggerTraining, request: {} },
  pause: { service: SERVICES.pauseTraining, request: {} },
  resume: { service: SERVICES.resumeTraining, request: {} },
  stop: { service: SERVICES.cancelTraining, request: {} },
} as const;

/** SVG polyline points for a curve scaled into width x height (y grows downwards); "" for < 2 points. */
export function polyline(points: readonly Point[], width: number, height: number): string {
  if (points.length < 2) {
    return "";
  }
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = x1 > x0 ? width / (x1 - x0) : 0;
  const sy = y1 > y0 ? height / (y1 - y0) : 0;
  return points.map((p) => `${((p.x - x0) * sx).toFixed(1)},${(height - (p.y - y0) * sy).toFixed(1)}`).join(" ");
}
