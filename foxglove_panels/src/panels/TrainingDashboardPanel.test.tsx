// @vitest-environment jsdom
import { afterEach, beforeAll, describe, expect, it } from "vitest";

import { FakeContext, mount } from "../testing/fakeContext";
import { initTrainingDashboardPanel } from "./TrainingDashboardPanel";

beforeAll(() => {
  (globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;
});

const stats = (step: number, loss: number) => ({ job_id: "job-1", epoch: 45, total_epochs: 100, step,
  total_steps: 1000, loss, learning_rate: 0.001, steps_per_second: 10, eta_s: 9252 });
const running = { state: 2, state_name: "RUNNING", job_id: "job-1", policy_type: "act", progress_pct: 67,
  model_version: "", message: "" };
const workflow = { stage: 2, stage_name: "TRAINING", auto_train_enabled: true, episodes_collected: 52,
  min_episodes_before_training: 50, current_model_version: "v3", current_job_id: "job-1",
  degradation_detected: false, recommendations: ["42 human corrections since v3 — retrain recommended"],
  message: "" };

let unmount: (() => void) | undefined;
afterEach(() => unmount?.());

describe("Training Dashboard panel", () => {
  it("is usable with no data", async () => {
    const fake = new FakeContext();
    unmount = await mount(initTrainingDashboardPanel, fake);
    await fake.render({});
    expect(fake.text()).toContain("no training job yet");
    expect(fake.button("start training").disabled).toBe(false);
    expect(fake.button("pause").disabled).toBe(true);
  });

  it("shows the seed's metrics and draws the live loss curve", async () => {
    const fake = new FakeContext();
    unmount = await mount(initTrainingDashboardPanel, fake);
    await fake.render({ "/lerobot/trainer_status": running, "/lerobot/training_stats": stats(100, 0.5),
      "/training_workflow/status": workflow });
    await fake.render({ "/lerobot/training_stats": stats(200, 0.0234) });
    const text = fake.text();
    expect(text).toContain("epoch 45/100");
    expect(text).toContain("67%");
    expect(text).toContain("loss 0.0234");
    expect(text).toContain("lr 1.00e-3");
    expect(text).toContain("ETA 2:34:12");
    expect(text).toContain("TRAINING · 52/50 episodes");
    expect(text).toContain("retrain recommended");
    const points = fake.panelElement.querySelector("[data-testid=loss-curve] polyline")?.getAttribute("points");
    expect(points?.split(" ").length).toBe(2);
    expect(fake.button("start training").disabled).toBe(true);
    expect(fake.button("pause").disabled).toBe(false);
  });

  it("stop calls the workflow's cancel and shows the error when the service is missing", async () => {
    const fake = new FakeContext();
    unmount = await mount(initTrainingDashboardPanel, fake);
    await fake.render({ "/lerobot/trainer_status": running });
    await fake.click(fake.button("stop"));
    expect(fake.calls.map((c) => c.service)).toEqual(["/training_workflow/cancel_training"]);
    expect(fake.text()).toContain("cancel_training failed");
  });

  it("start calls /training_workflow/trigger_training", async () => {
    const fake = new FakeContext();
    fake.handlers.set("/training_workflow/trigger_training", () => ({}));
    unmount = await mount(initTrainingDashboardPanel, fake);
    await fake.render({});
    await fake.click(fake.button("start training"));
    expect(fake.calls).toEqual([{ service: "/training_workflow/trigger_training", request: {} }]);
    expect(fake.text()).toContain("/training_workflow/trigger_training: done");
  });
});
