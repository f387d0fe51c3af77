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
});
