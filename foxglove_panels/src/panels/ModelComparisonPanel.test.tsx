// @vitest-environment jsdom
import { act } from "react";
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { FakeContext, mount } from "../testing/fakeContext";
import { initModelComparisonPanel } from "./ModelComparisonPanel";

beforeAll(() => {
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
});

const metrics = (id: string, successes: number) => ({ model_id: id, trials: 100, successes,
  success_rate: successes / 100, success_ci_low: successes / 100 - 0.09, success_ci_high: successes / 100 + 0.08,
  mean_execution_time_s: 4.2 });
const done = { state: 2, state_name: "COMPLETED", comparison_id: "cmp-1", mode: "ab",
  models: [metrics("v1", 60), metrics("v2", 80)], trials_per_model_target: 100, test_name: "two-sided Fisher exact",
  p_value: 0.0031, significant: true, alpha: 0.05, winner: "v2", message: "" };

async function type(el: HTMLInputElement, value: string): Promise<void> {
  await act(async () => {
    const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value")!.set!;
    setter.call(el, value);
    el.dispatchEvent(new Event("input", { bubbles: true }));
  });
}

let unmount: (() => void) | undefined;
afterEach(() => unmount?.());

describe("Model Comparison panel", () => {
  it("starts an A/B test only with exactly two models", async () => {
    const fake = new FakeContext();
    fake.handlers.set("/model_comparison/start", () => ({ success: true, message: "started", comparison_id: "c" }));
    unmount = await mount(initModelComparisonPanel, fake);
    await fake.render({});
    expect(fake.text()).toContain("no comparison status");
    const input = fake.panelElement.querySelector("input[aria-label=models]") as HTMLInputElement;
    await type(input, "v1");
    expect(fake.button("start").disabled).toBe(true);
    expect(fake.text()).toContain("exactly 2 models (1 chosen)");
    await type(input, "v1, v2");
    await fake.click(fake.button("start"));
    expect(fake.calls).toEqual([{ service: "/model_comparison/start", request: { model_ids: ["v1", "v2"],
      mode: "ab", trials_per_model: 0, alpha: 0 } }]);
    expect(fake.text()).toContain("/model_comparison/start: started");
  });

  it("shows rates with intervals, the evidence and the decision, and deploys the winner", async () => {
    const fake = new FakeContext();
    fake.handlers.set("/training_workflow/deploy_model", () => ({ success: true, message: "v2 deployed",
      previous_model_id: "v1" }));
    unmount = await mount(initModelComparisonPanel, fake);
    await fake.render({ "/model_comparison/status": done });
    expect(fake.text()).toContain("v2: 80% [71%, 88%] · 80/100 trials");
    expect(fake.text()).toContain("two-sided Fisher exact: p = 0.00310 (alpha 0.05)");
    expect(fake.text()).toContain("winner: v2");
    await fake.click(fake.button("deploy winner"));
    expect(fake.calls).toEqual([{ service: "/training_workflow/deploy_model", request: { model_id: "v2" } }]);
    expect(fake.text()).toContain("v2 deployed");
  });

  it("shows the sequential evidence, the difference, the partial-credit and time tests and the Bayesian summary",
    async () => {
      const fake = new FakeContext();
      unmount = await mount(initModelComparisonPanel, fake);
      await fake.render({ "/model_comparison/status": { ...done, difference: 0.2, difference_ci_low: 0.07,
        difference_ci_high: 0.32, e_value: 31.4, e_threshold: 20, futility_bound: 0.05, trials_cap: 100,
        stop_reason: "efficacy", expected_more_trials: -1, score_test_name: "Mann-Whitney U", score_p_value: 0.0012,
        score_effect: 0.21, time_test_name: "Mann-Whitney U", time_p_value: -1, prob_best: [0.001, 0.999],
        expected_loss: [0.2, 0] } });
      const text = fake.text();
      expect(text).toContain("sequential e-value 31.4 (winner at ≥ 20, futility at ≤ 0.050, cap 100) · stopped: efficacy");
      expect(text).toContain("difference v2 − v1: +20 pts [+7 pts, +32 pts]");
      expect(text).toContain("partial credit (Mann-Whitney U): p = 0.00120, P(v2 scores higher) − ½ = 0.21");
      expect(text).toContain("time to success (Mann-Whitney U): not enough successes yet");
      expect(text).toContain("Bayesian (Beta(1,1) priors): P(v1 best) 0%, P(v2 best) 100%");
    });

  it("shows no evidence details for a detailed comparison or an older node's status", async () => {
    const fake = new FakeContext();
    unmount = await mount(initModelComparisonPanel, fake);
    await fake.render({ "/model_comparison/status": done });
    expect(fake.text()).not.toContain("e-value");
    expect(fake.text()).not.toContain("partial credit");
  });
});
