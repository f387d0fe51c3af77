// Model Comparison logic (RoArm seed): choose 2-4 models, start an A/B test or a detailed comparison, live success
// rates with their intervals, the test's evidence and decision, deploy the winner.
import { formatPercent, SERVICES } from "./ros";

export type ModelMetrics = { model_id: string; trials: number; successes: number; success_rate: number;
  success_ci_low: number; success_ci_high: number; mean_execution_time_s: number };
export type ComparisonStatus = { state: number; state_name: string; comparison_id: string; mode: string;
  models: ModelMetrics[]; trials_per_model_target: number; test_name: string; p_value: number;
  significant: boolean; alpha: number; winner: string; message: string };

export type Mode = "ab" | "detailed";

/** Model ids from the operator's text ("v1, v2 v3"): trimmed, de-duplicated, in order. */
export function parseModels(text: string): string[] {
  const out: string[] = [];
  for (const id of text.split(/[\s,]+/)) {
    if (id !== "" && !out.includes(id)) {
      out.push(id);
    }
  }
  return out;
}

/** Why the selection cannot start (undefined when it can): A/B takes exactly 2 models, detailed 2-4. */
export function selectionProblem(models: string[], mode: Mode): string | undefined {
  if (mode === "ab" && models.length !== 2) {
    return `an A/B test compares exactly 2 models (${models.length} chosen)`;
  }
  if (mode === "detailed" && (models.length < 2 || models.length > 4)) {
    return `a detailed comparison takes 2 to 4 models (${models.length} chosen)`;
  }
  return undefined;
}

export function startRequest(models: string[], mode: Mode, trialsPerModel = 0, alpha = 0):
  { service: string; request: { model_ids: string[]; mode: string; trials_per_model: number; alpha: number } } {
  const problem = selectionProblem(models, mode);
  if (problem) {
    throw new Error(problem);
  }
  return { service: SERVICES.compareStart, request: { model_ids: models, mode, trials_per_model: trialsPerModel,
    alpha } };
}

export const STOP = { service: SERVICES.compareStop, request: {} };

export function deployRequest(status: ComparisonStatus | undefined):
  { service: string; request: { model_id: string } } | undefined {
  if (status == undefined || status.winner === "" || !status.significant) {
    return undefined;
  }
  return { service: SERVICES.deployModel, request: { model_id: status.winner } };
}

export type ModelRow = { id: string; text: string; ciLow: number; ciHigh: number; rate: number; winner: boolean };

export function comparisonView(status: ComparisonStatus | undefined): { title: string; rows: ModelRow[];
  evidence: string; decision: string; running: boolean } {
  if (status == undefined) {
    return { title: "no comparison status (topic /model_comparison/status)", rows: [], evidence: "", decision: "",
      running: false };
  }
  const rows = status.models.map((m) => ({
    id: m.model_id,
    text: `${m.model_id}: ${formatPercent(m.success_rate)} [${formatPercent(m.success_ci_low)}, ` +
      `${formatPercent(m.success_ci_high)}] · ${m.successes}/${m.trials} trials`,
    ciLow: m.success_ci_low, ciHigh: m.success_ci_high, rate: m.success_rate, winner: m.model_id === status.winner,
  }));
  const evidence = status.p_value >= 0
    ? `${status.test_name}: p = ${status.p_value.toPrecision(3)} (alpha ${status.alpha})`
    : `${status.test_name || "test"}: not enough trials yet (target ${status.trials_per_model_target} per model)`;
  const decision = status.winner !== "" && status.significant
    ? `winner: ${status.winner}` : status.state_name === "COMPLETED" ? "no significant difference" : "undecided";
  return { title: `${status.state_name} ${status.mode} ${status.comparison_id}`.trim(), rows, evidence, decision,
    running: status.state_name === "RUNNING" };
}
