"""``model_comparison``: the RoArm seed's Model Comparison & A/B Testing, for our policies (thin adapter).

The comparison's lifecycle, statistics and trial bookkeeping are ``evaluation/comparison.py`` (on
``evaluation/stats.py``); the blind, balanced trial order is ``evaluation/scheduler.py``. This node declares the
parameters, asks the policy server for its models (``GET /models``), publishes the status and, when the lifecycle
says so, deploys the winner (``POST /models/<id>/deploy``).

    model_comparison --ros-args -p policy_port:=8000 -p trials_per_model:=30
    ros2 service call /model_comparison/start h1_training_interfaces/srv/CompareModels \\
        "{model_ids: ['v1-act-...', 'v2-act-...'], mode: ab}"
    ros2 service call /model_comparison/next_model std_srvs/srv/Trigger          # message = model id to run
    ros2 service call /model_comparison/record_trial h1_training_interfaces/srv/RecordTrial \\
        "{model_id: 'v2-act-...', success: true, execution_time_s: 12.5, grasp_confidence: -1.0, score: 1.0}"
    ros2 service call /model_comparison/get_status std_srvs/srv/Empty            # republish + log a summary
    ros2 topic echo /model_comparison/status

Services: ``model_comparison/start`` (CompareModels: 2 models for ``ab``, 2-4 for ``detailed``; ``mode`` ""
picks ``ab`` for 2 models, else ``detailed``), ``model_comparison/record_trial`` (RecordTrial),
``model_comparison/stop`` (Trigger), ``model_comparison/get_status`` (Empty), ``model_comparison/next_model``
(Trigger). Topic: ``model_comparison/status`` (ModelComparisonStatus, latched). One comparison runs at a time; it
is COMPLETED when its verdict is final (A/B: the anytime-valid sequential test stopped - winner, futility or
cap; detailed: the planned trials are in), CANCELLED by ``stop``. Only then is a winner recommended, or deployed when
``auto_deploy_winner`` is true.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from std_srvs.srv import Empty, Trigger

from h1_training.evaluation.comparison import ComparisonLifecycle, State
from h1_training.nodes.common import LATCHED_QOS, ParamsMixin, run_node
from h1_training.params import param
from h1_training.policy.client import PolicyClientError, http_json
from h1_training_interfaces.msg import ModelComparisonStatus, ModelMetrics
from h1_training_interfaces.srv import CompareModels, RecordTrial


@dataclass
class ModelComparisonNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    policy_host: str = param("127.0.0.1", "policy server (h1-training serve) host: GET /models, deploy")
    policy_port: int = param(8000, "policy server port", min=1, max=65535)
    api_key: str = param("", "policy server API key (\"\" = $H1_POLICY_API_KEY, else none)")
    alpha: float = param(0.05, "significance level when the request gives 0 (the false-positive rate the "
                         "comparison guarantees)", min=0.001, max=0.2)
    trials_per_model: int = param(0, "when the request gives 0: A/B - the trial cap per model (0 = from the "
                                  "planned effect); detailed - the planned trials per model (0 = 100, as in the "
                                  "RoArm seed)", min=0, max=100000)
    planned_rate_a: float = param(0.5, "A/B: planned success rate of the first (baseline) model when the request "
                                  "gives 0", min=0.01, max=0.99)
    planned_rate_b: float = param(0.8, "A/B: planned success rate of the second model when the request gives 0 "
                                  "(the effect the sequential test aims at; must exceed planned_rate_a)",
                                  min=0.01, max=0.99)
    auto_deploy_winner: bool = param(False, "deploy the winner on the policy server when the verdict is final "
                                     "(false: only recommend it)")
    seed: int = param(0, "seed of the randomized, balanced trial order (next_model)", min=0, max=2**31 - 1)
    http_timeout_s: float = param(5.0, "timeout of GET /models [s] (a deploy may take twice this)",
                                  min=0.1, max=60.0)


PARAMS = ModelComparisonNodeParams


class ModelComparisonNode(ParamsMixin, Node):
    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("model_comparison")
        self.declare_specs()
        # Service callbacks run one at a time (single-threaded executor); the deploy thread also publishes.
        self._lock = threading.Lock()
        self._life = ComparisonLifecycle(seed=int(self.p["seed"]))
        self._status_pub = self.create_publisher(ModelComparisonStatus, "model_comparison/status", LATCHED_QOS)
        self.create_service(CompareModels, "model_comparison/start", self._on_start)
        self.create_service(RecordTrial, "model_comparison/record_trial", self._on_record)
        self.create_service(Trigger, "model_comparison/stop", self._on_stop)
        self.create_service(Empty, "model_comparison/get_status", self._on_get_status)
        self.create_service(Trigger, "model_comparison/next_model", self._on_next_model)
        self._publish()
        p = self.p
        self.get_logger().info(
            f"model_comparison: policy server {p['policy_host']}:{p['policy_port']}; alpha {p['alpha']:g}, A/B "
            f"planned for {p['planned_rate_a']:g} vs {p['planned_rate_b']:g}; winner "
            f"{'deployed automatically' if p['auto_deploy_winner'] else 'recommended only (auto_deploy_winner false)'}")

    # --- policy server -------------------------------------------------------------------------------------
    def _http(self, path: str, method: str = "GET", timeout: float | None = None) -> Any:
        key = self.p["api_key"] or os.environ.get("H1_POLICY_API_KEY") or None
        return http_json(self.p["policy_host"], self.p["policy_port"], path, method=method, api_key=key,
                         body={} if method == "POST" else None,
                         timeout=self.p["http_timeout_s"] if timeout is None else timeout)

    def _known_models(self) -> list[str]:
        listing = self._http("/models")
        if not isinstance(listing, dict) or not isinstance(listing.get("models"), list):
            raise PolicyClientError(f"unexpected GET /models answer: {listing!r}")
        return [str(m.get("id")) for m in listing["models"] if isinstance(m, dict)]

    def _deploy(self, comparison_id: str, model_id: str) -> None:
        try:
            # the server answers within ~5 s (202 when the load takes longer): allow for that
            reply = self._http(f"/models/{model_id}/deploy", "POST", timeout=2 * self.p["http_timeout_s"] + 5.0)
            epoch = reply.get("epoch") if isinstance(reply, dict) else None
            note = (f"Deployed {model_id} as the policy server's default model"
                    + (f" (epoch {epoch})." if epoch is not None else " (loading; see /training_status)."))
            self.get_logger().info(f"comparison {comparison_id}: {note}")
        except PolicyClientError as exc:
            note = f"Deploying {model_id} failed: {exc}. Deploy it by hand: POST /models/{model_id}/deploy."
            self.get_logger().error(f"comparison {comparison_id}: {note}")
        with self._lock:
            self._life.deployed(comparison_id, note)
        self._publish()

    # --- status --------------------------------------------------------------------------------------------
    def _status(self) -> tuple[ModelComparisonStatus, str]:
        """The status message and the operator's paragraph (under the lock)."""
        life = self._life
        msg = ModelComparisonStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = life.state.value
        msg.state_name = life.state.name
        msg.comparison_id = life.comparison_id
        msg.p_value = msg.reference_p_value = msg.score_p_value = msg.time_p_value = -1.0
        msg.e_value = -1.0
        msg.expected_more_trials = -1
        cmp = life.comparison
        if cmp is None:
            msg.alpha = float(self.p["alpha"])
            msg.trials_per_model_target = int(self.p["trials_per_model"])
            msg.planned_rate_a, msg.planned_rate_b = float(self.p["planned_rate_a"]), float(self.p["planned_rate_b"])
            msg.message = life.summary()
            return msg, msg.message
        result = cmp.result()
        msg.mode = cmp.mode
        msg.trials_per_model_target = msg.trials_cap = cmp.trials_per_model
        msg.test_name = result.test_name
        msg.p_value = float(result.p_value)
        msg.significant = bool(result.significant)
        msg.alpha = float(result.alpha)
        msg.winner = result.winner
        for m in result.models:
            msg.models.append(ModelMetrics(
                model_id=m.model_id, trials=m.trials, successes=m.successes, success_rate=m.success_rate,
                success_ci_low=m.success_ci_low, success_ci_high=m.success_ci_high,
                mean_execution_time_s=m.mean_execution_time_s, std_execution_time_s=m.std_execution_time_s,
                grasp_confidence=m.grasp_confidence, consistency_score=m.consistency_score,
                scored_trials=m.scored_trials, mean_score=m.mean_score))
        if result.difference is not None:
            a, b = result.models[:2]
            msg.difference = float(b.success_rate - a.success_rate)
            msg.difference_ci_low, msg.difference_ci_high = float(result.difference.low), float(result.difference.high)
        seq, plan = result.sequential, result.plan
        if seq is not None and plan is not None:
            msg.e_value, msg.e_threshold = float(seq.e_value), float(seq.threshold)
            msg.futility_bound = float(seq.futility)
            msg.stop_reason = result.stop_reason
            msg.expected_more_trials = int(result.expected_more_trials)
            msg.planned_rate_a, msg.planned_rate_b = float(plan.rate_a), float(plan.rate_b)
        if result.reference is not None:
            msg.reference_test_name, msg.reference_p_value = result.reference.test_name, float(result.reference.p_value)
        if result.score_test is not None:
            msg.score_test_name, msg.score_p_value = result.score_test.test_name, float(result.score_test.p_value)
            msg.score_effect = float(result.score_test.effect)
        if result.time_test is not None:
            msg.time_test_name, msg.time_p_value = result.time_test.test_name, float(result.time_test.p_value)
        if result.bayes is not None:
            msg.prob_best = [float(x) for x in result.bayes.prob_best]
            msg.expected_loss = [float(x) for x in result.bayes.expected_loss]
        msg.message = result.message + (f". {life.note}" if life.note else "")
        return msg, life.summary()

    def _publish(self) -> str:
        with self._lock:
            msg, summary = self._status()
        self._status_pub.publish(msg)
        return summary

    # --- services ------------------------------------------------------------------------------------------
    def _on_start(self, req: CompareModels.Request, res: CompareModels.Response) -> CompareModels.Response:
        p = self.p
        rates = (float(req.planned_rate_a) or float(p["planned_rate_a"]),
                 float(req.planned_rate_b) or float(p["planned_rate_b"]))
        try:
            with self._lock:
                self._life.seed = int(p["seed"])
                res.message = self._life.start(list(req.model_ids), req.mode, int(req.trials_per_model)
                                               or int(p["trials_per_model"]), float(req.alpha) or float(p["alpha"]),
                                               rates, self._known_models)
                res.comparison_id = self._life.comparison_id
        except ValueError as exc:
            res.success, res.message = False, str(exc)
            return res
        except PolicyClientError as exc:
            res.success, res.message = False, (f"cannot list the models of the policy server at "
                                               f"{p['policy_host']}:{p['policy_port']}: {exc}")
            return res
        res.success = True
        self.get_logger().info(f"started {res.message}")
        self._publish()
        return res

    def _on_record(self, req: RecordTrial.Request, res: RecordTrial.Response) -> RecordTrial.Response:
        with self._lock:
            out = self._life.record(req.model_id, bool(req.success), float(req.execution_time_s),
                                    float(req.grasp_confidence), float(req.score), bool(self.p["auto_deploy_winner"]))
            cid, final = self._life.comparison_id, self._life.state is State.COMPLETED
        res.accepted, res.message = out.accepted, out.message
        if not out.accepted:
            self.get_logger().warning(f"trial rejected: {out.message}")
            return res
        if final:
            self.get_logger().info(f"comparison {cid} COMPLETED: {self._life.summary()}")
        if out.deploy:
            threading.Thread(target=self._deploy, args=(cid, out.deploy), daemon=True).start()
        self._publish()
        return res

    def _on_stop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            res.success, res.message = self._life.stop()
        if res.success:
            self.get_logger().info(self._publish())
        return res

    def _on_get_status(self, _req: Empty.Request, res: Empty.Response) -> Empty.Response:
        self.get_logger().info(self._publish())
        return res

    def _on_next_model(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            res.success, res.message = self._life.next_model()
        return res


def main(args: list[str] | None = None) -> None:
    run_node(ModelComparisonNode, args)


if __name__ == "__main__":
    main()
