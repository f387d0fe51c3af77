// Model Comparison logic (RoArm seed): choose 2-4 models, start an A/B test or a detailed comparison, live success
// rates with their intervals, the test's evidence and decision, deploy the winner.
import { formatPercent, SERVICES } from "./ros";

export type ModelMetrics = { model_id: string; trials: number; successes: number; success_rate: number;
  success_ci_low: number; success_ci_high: number; mean_execution_time_s: number };
export type ComparisonStatus = { state: number; state_name: string; comparison_id: string; mode: string;
  models: ModelMetrics[]; trials_per_model_target: number; test_name: string; p_value: number;
  significant: boolean; alpha: number; winner: string; message: string } & Partial<ComparisonEvidence>;

/** The statistics issue's fields of ModelComparisonStatus (A/B mode; older nodes may not send them). */
export type ComparisonEvidence = { difference: number; difference_ci_low: number; difference_ci_high: number;
  e_value: number; e_threshold: number; futility_bound: number; trials_cap: number; stop_reason: string;
  expected_more_trials: number; reference_test_name: string; reference_p_value: number; score_test_name: string;
  score_p_value: number; score_effect: number; time_test_name: string; time_p_value: number; prob_best: number[];
  expected_loss: number[] };

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

const signed = (x: number): string => `${x >= 0 ? "+" : ""}${(x * 100).toFixed(0)} pts`;

/** The evidence beyond the headline test, one line each, for what the status carries: the anytime-valid
 * e-value against its bounds, the difference with its interval, the partial-credit score test, the
 * time-to-success test and the (labelled) Bayesian summary. */
export function evidenceDetails(status: ComparisonStatus | undefined): string[] {
  const [a, b] = status?.models ?? [];
  if (status == undefined || status.mode !== "ab" || a == undefined || b == undefined) {
    return [];
  }
  const lines: string[] = [];
  if (status.e_value !== undefined && status.e_threshold !== undefined && status.e_threshold > 0) {
    const stop = status.stop_reason ? ` · stopped: ${status.stop_reason}` : "";
    const more = (status.expected_more_trials ?? -1) >= 0 && !status.stop_reason
      ? ` · about ${status.expected_more_trials} more trials per model at this gap` : "";
    lines.push(`sequential e-value ${status.e_value.toPrecision(3)} (winner at ≥ ${status.e_threshold}, ` +
      `futility at ≤ ${(status.futility_bound ?? 0).toPrecision(2)}, cap ${status.trials_cap ?? "-"})${stop}${more}`);
  }
  if (status.difference !== undefined && status.difference_ci_low !== undefined &&
      status.difference_ci_high !== undefined && a.trials > 0 && b.trials > 0) {
    lines.push(`difference ${b.model_id} − ${a.model_id}: ` +
      `${signed(status.difference)} [${signed(status.difference_ci_low)}, ${signed(status.difference_ci_high)}]`);
  }
  if (status.score_test_name) {
    lines.push((status.score_p_value ?? -1) >= 0
      ? `partial credit (${status.score_test_name}): p = ${status.score_p_value!.toPrecision(3)}, ` +
        `P(${b.model_id} scores higher) − ½ = ${(status.score_effect ?? 0).toFixed(2)}`
      : `partial credit (${status.score_test_name}): not enough scored trials yet`);
  }
  if (status.time_test_name) {
    lines.push((status.time_p_value ?? -1) >= 0
      ? `time to success (${status.time_test_name}): p = ${status.time_p_value!.toPrecision(3)}`
      : `time to success (${status.time_test_name}): not enough successes yet`);
  }
  const [bestA, bestB] = status.prob_best ?? [];
  if (bestA !== undefined && bestB !== undefined) {
    lines.push(`Bayesian (Beta(1,1) priors): P(${a.model_id} best) ${formatPercent(bestA)}, ` +
      `P(${b.model_id} best) ${formatPercent(bestB)}`);
  }
  return lines;
}

export type ModelRow = { id: string; text: string; ciLow: number; ciHigh: number; rate: number; winner: boolean };

export function comparisonView(status: ComparisonStatus | undefined): { title: string; rows: ModelRow[];
  evidence: string; details: string[]; decision: string; running: boolean } {
  if (status == undefined) {
    return { title: "no comparison status (topic /model_comparison/status)", rows: [], evidence: "", details: [],
      decision: "", running: false };
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
  return { title: `${status.state_name} ${status.mode} ${status.comparison_id}`.trim(), rows, evidence,
    details: evidenceDetails(status), decision, running: status.state_name === "RUNNING" };
}
