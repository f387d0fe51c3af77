"""sim_ab_trials: runs a ``model_comparison`` A/B test's trials in the simulated reach task (thin adapter).

It starts the comparison (``model_comparison/start``, ``mode: ab``) of ``model_a`` and ``model_b``, then per
trial asks ``model_comparison/next_model`` which model runs next (the node's randomized, balanced, blinded order:
this runner sees only an id), runs one seeded episode of that model alone in the simulator
(``sim/rollout.py``, the model loaded from the server's registry folder ``models_dir``), and reports it with
``model_comparison/record_trial`` (success by the simulator's check; execution time = time to success plus the
hold). It stops when ``model_comparison/status`` says COMPLETED (the sequential test fired or the planned trials
are in) and writes the verdict to ``result_file`` as JSON. Exit code 0 when the comparison completed.

    sim_ab_trials --ros-args -p model_a:=v1-keypoint-... -p model_b:=v5-keypoint-... -p models_dir:=models \\
        -p trials_per_model:=40 -p result_file:=ab.json
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rclpy.node import Node
from std_srvs.srv import Trigger

from h1_training.nodes.common import LATCHED_QOS, ParamsMixin, call_service, run_script_node
from h1_training.params import param
from h1_training_interfaces.msg import ModelComparisonStatus
from h1_training_interfaces.srv import CompareModels, RecordTrial


@dataclass
class SimABTrialsParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    comparison: str = param("model_comparison", "name of the model_comparison node", read_only=True)
    model_a: str = param("", "first model id (registry id on the policy server)", read_only=True)
    model_b: str = param("", "second model id", read_only=True)
    models_dir: str = param("", "the policy server's registry folder (h1-training serve --models-dir)",
                            read_only=True)
    trials_per_model: int = param(40, "planned trials per model", min=1, max=100000, read_only=True)
    alpha: float = param(0.05, "significance level", min=0.001, max=0.2, read_only=True)
    seed: int = param(0, "run seed of the episodes (objects)", min=0, max=2**31 - 1, read_only=True)
    episode_offset: int = param(200000, "index of the first episode in the seed's sequence (fresh episodes, not "
                                "the per-epoch evaluation set)", min=0, read_only=True)
    image_width: int = param(96, "camera width [px]", min=16, max=1920, read_only=True)
    image_height: int = param(72, "camera height [px]", min=16, max=1080, read_only=True)
    exec_index: int = param(0, "action-chunk row executed each frame", min=0, max=1000, read_only=True)
    result_file: str = param("", "write the verdict here as JSON ('' = only log it)", read_only=True)
    timeout_s: float = param(1800.0, "give up after this long [s]", min=1.0, max=86400.0, read_only=True)


class SimABTrials(ParamsMixin, Node):
    PARAMS = SimABTrialsParams

    def __init__(self) -> None:
        super().__init__("sim_ab_trials")
        self.declare_specs()
        name = self.p["comparison"].strip("/")
        self.start_client = self.create_client(CompareModels, f"{name}/start")
        self.next_client = self.create_client(Trigger, f"{name}/next_model")
        self.record_client = self.create_client(RecordTrial, f"{name}/record_trial")
        self.status: ModelComparisonStatus | None = None
        self.create_subscription(ModelComparisonStatus, f"{name}/status", self._on_status, LATCHED_QOS)

    def _on_status(self, msg: ModelComparisonStatus) -> None:
        self.status = msg

    def _call(self, client, request, timeout: float = 30.0):
        return call_service(client, request, timeout)

    def run(self) -> int:
        from h1_training.sim.reach_task import episode_rng, sample_object
        from h1_training.sim.rollout import SimRollout
        from h1_training.workflow.sim_learning import PROMPT, local_policy

        p, log = self.p, self.get_logger()
        ids = [p["model_a"], p["model_b"]]
        if not all(ids) or not p["models_dir"]:
            log.error("model_a, model_b and models_dir are required")
            return 2
        policies = {m: local_policy(Path(p["models_dir"]), m) for m in ids}
        rollout = SimRollout(image_wh=(p["image_width"], p["image_height"]), cameras=("ego_cam",))
        reply = self._call(self.start_client, CompareModels.Request(
            model_ids=ids, mode=CompareModels.Request.MODE_AB, trials_per_model=p["trials_per_model"],
            alpha=p["alpha"]))
        if not reply.success:
            log.error(f"model_comparison refused the A/B test: {reply.message}")
            return 1
        cmp_id = reply.comparison_id
        log.info(f"A/B {cmp_id}: {reply.message}")
        deadline = time.monotonic() + p["timeout_s"]
        trial = 0
        while time.monotonic() < deadline:
            st = self.status
            if st is not None and st.comparison_id == cmp_id and st.state == ModelComparisonStatus.STATE_COMPLETED:
                return self._finish(st, trial)
            nxt = self._call(self.next_client, Trigger.Request())
            if not nxt.success:  # every model has its trials: the final status is on its way
                time.sleep(0.05)
                continue
            model = nxt.message
            obj = sample_object(episode_rng(p["seed"], p["episode_offset"] + trial))
            ep = rollout.episode(obj, None, exec_index=p["exec_index"], prompt=PROMPT)
            while not ep.done:
                obs = ep.begin_frame()
                ep.end_frame(None if obs is None else policies[model]([obs])[0])
            res = ep.result()
            took = res.time_to_success_s + rollout.task.hold_s if res.policy_success else -1.0
            rec = self._call(self.record_client, RecordTrial.Request(
                model_id=model, success=bool(res.policy_success), execution_time_s=took,
                grasp_confidence=-1.0, score=float(res.score)))
            if not rec.accepted:
                log.error(f"trial rejected: {rec.message}")
                return 1
            trial += 1
            log.info(f"[A/B] trial {trial}: {'success' if res.policy_success else 'failure'} "
                     f"(final distance {res.final_distance_m * 100:.0f} cm)")
        log.error(f"the A/B test did not complete in {p['timeout_s']:.0f} s")
        return 1

    def _finish(self, st: ModelComparisonStatus, trials: int) -> int:
        verdict = {
            "comparison_id": st.comparison_id, "test": st.test_name, "p_value": st.p_value,
            "significant": st.significant, "alpha": st.alpha, "winner": st.winner, "message": st.message,
            "trials": trials, "models": [{"model_id": m.model_id, "trials": m.trials, "successes": m.successes,
                                          "success_rate": m.success_rate, "ci_low": m.success_ci_low,
                                          "ci_high": m.success_ci_high} for m in st.models],
        }
        self.get_logger().info(f"[A/B] verdict: {json.dumps(verdict)}")
        if self.p["result_file"]:
            Path(self.p["result_file"]).write_text(json.dumps(verdict, indent=2))
        return 0


def main(args=None) -> int:
    return run_script_node(SimABTrials, args)
