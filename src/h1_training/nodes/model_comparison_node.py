"""``model_comparison``: the RoArm seed's Model Comparison & A/B Testing, for our policies (thin adapter).

The statistics and the trial bookkeeping are ``evaluation/comparison.py`` (on ``evaluation/stats.py``); the
blind, balanced trial order is ``evaluation/scheduler.py``. This node checks model ids against the policy server
(``GET /models``), keeps one comparison at a time, publishes its status and, when asked, deploys the winner
(``POST /models/<id>/deploy``).

    model_comparison --ros-args -p policy_port:=8000 -p trials_per_model:=30
    ros2 service call /model_comparison/start h1_training_interfaces/srv/CompareModels \\
        "{model_ids: ['v1-act-...', 'v2-act-...'], mode: ab}"
    ros2 service call /model_comparison/next_model std_srvs/srv/Trigger          # message = model id to run
    ros2 service call /model_comparison/record_trial h1_training_interfaces/srv/RecordTrial \\
        "{model_id: 'v2-act-...', success: true, execution_time_s: 12.5, grasp_confidence: -1.0}"
    ros2 service call /model_comparison/get_status std_srvs/srv/Empty            # republish + log a summary
    ros2 topic echo /model_comparison/status

Services: ``model_comparison/start`` (CompareModels: 2 models for ``ab``, 2-4 for ``detailed``; ``mode`` ""
picks ``ab`` for 2 models, else ``detailed``), ``model_comparison/record_trial`` (RecordTrial),
``model_comparison/stop`` (Trigger), ``model_comparison/get_status`` (Empty), ``model_comparison/next_model``
(Trigger). Topic: ``model_comparison/status`` (ModelComparisonStatus, latched). One comparison runs at a time; it
is COMPLETED when its verdict is final (A/B: the sequential rule fired or the planned trials are in; detailed:
the planned trials are in), CANCELLED by ``stop``. Only then is a winner recommended, or deployed when
``auto_deploy_winner`` is true.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from std_srvs.srv import Empty, Trigger

from h1_training.evaluation.comparison import MODE_AB, MODE_DETAILED, Comparison, ComparisonResult
from h1_training.evaluation.scheduler import TrialScheduler
from h1_training.evaluation.stats import newcombe_difference_interval
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
    alpha: float = param(0.05, "significance level when the request gives 0 (overall: the A/B test spends 1/5 "
        "of it on the early-stopping rule)", min=0.001, max=0.2)
    trials_per_model: int = param(100, "planned trials per model when the request gives 0 (the RoArm seed "
        "runs 100)", min=1, max=100000)
    auto_deploy_winner: bool = param(False, "deploy the winner on the policy server when the verdict is final "
        "(false: only recommend it)")
    seed: int = param(0, "seed of the randomized, balanced trial order (next_model)", min=0, max=2**31 - 1)
    http_timeout_s: float = param(5.0, "timeout of GET /models [s] (a deploy may take twice this)", min=0.1, max=60.0)


PARAMS = ModelComparisonNodeParams

STATE_NAMES = {ModelComparisonStatus.STATE_IDLE: "IDLE", ModelComparisonStatus.STATE_RUNNING: "RUNNING",
               ModelComparisonStatus.STATE_COMPLETED: "COMPLETED", ModelComparisonStatus.STATE_CANCELLED: "CANCELLED"}


def _pct(x: float) -> str:
    return f"{100.0 * x:.0f}%"


def operator_summary(comparison_id: str, state_name: str, cmp: Comparison, result: ComparisonResult,
                     note: str = "") -> str:
    """One paragraph an operator reads: rates with their intervals, times, the difference, the verdict, and
    what to do next."""
    kind = "A/B test" if cmp.mode == MODE_AB else f"detailed comparison of {len(cmp.models)} models"
    least = min(m.trials for m in result.models)
    parts = [f"Comparison {comparison_id} ({kind}, {state_name}): {least} of {cmp.trials_per_model} planned "
             f"trials per model, alpha {cmp.alpha:g}."]
    for m in result.models:
        line = (f"{m.model_id}: {m.successes}/{m.trials} succeeded ({_pct(m.success_rate)}, 95% CI "
                f"{_pct(m.success_ci_low)}-{_pct(m.success_ci_high)})")
        if m.mean_execution_time_s > 0:
            line += f", {m.mean_execution_time_s:.1f} +- {m.std_execution_time_s:.1f} s per success"
        parts.append(line + ".")
    if cmp.mode == MODE_AB:
        a, b = result.models
        ci = newcombe_difference_interval(a.successes, a.trials, b.successes, b.trials)
        parts.append(f"{b.model_id} minus {a.model_id}: {100 * (b.success_rate - a.success_rate):+.0f} points "
                     f"(95% CI {100 * ci.low:+.0f} to {100 * ci.high:+.0f}).")
    p = "not yet tested" if result.p_value < 0 else f"{result.p_value:.4g}"
    parts.append(f"Verdict ({result.test_name}, p {p}): {result.message}.")
    if note:
        parts.append(note)
    elif state_name == "RUNNING":
        parts.append("Run the next trial with the model /model_comparison/next_model names.")
    return " ".join(parts)


class ModelComparisonNode(ParamsMixin, Node):
    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("model_comparison")
        self.declare_specs()
        # Service callbacks run one at a time (single-threaded executor); the deploy thread also publishes.
        self._lock = threading.Lock()
        self._cmp: Comparison | None = None
        self._scheduler: TrialScheduler | None = None
        self._state = ModelComparisonStatus.STATE_IDLE
        self._id = ""
        self._note = ""  # what happened to the winner (recommended, deployed, deploy failed)
        self._started = 0
        self._status_pub = self.create_publisher(ModelComparisonStatus, "model_comparison/status", LATCHED_QOS)
        self.create_service(CompareModels, "model_comparison/start", self._on_start)
        self.create_service(RecordTrial, "model_comparison/record_trial", self._on_record)
        self.create_service(Trigger, "model_comparison/stop", self._on_stop)
        self.create_service(Empty, "model_comparison/get_status", self._on_get_status)
        self.create_service(Trigger, "model_comparison/next_model", self._on_next_model)
        self._publish()
        p = self.p
        self.get_logger().info(
            f"model_comparison: policy server {p['policy_host']}:{p['policy_port']}; defaults {p['trials_per_model']} "
            f"trials per model, alpha {p['alpha']:g}; winner "
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
            if self._id == comparison_id:
                self._note = note
        self._publish()

    # --- status --------------------------------------------------------------------------------------------
    def _status(self) -> tuple[ModelComparisonStatus, str]:
        """The status message and the operator's paragraph (under the lock)."""
        msg = ModelComparisonStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state = self._state
        msg.state_name = STATE_NAMES[self._state]
        msg.comparison_id = self._id
        msg.p_value = -1.0
        if self._cmp is None:
            msg.alpha = float(self.p["alpha"])
            msg.trials_per_model_target = int(self.p["trials_per_model"])
            msg.message = "no comparison yet: call /model_comparison/start with 2-4 model ids"
            return msg, msg.message
        cmp, result = self._cmp, self._cmp.result()
        msg.mode = cmp.mode
        msg.trials_per_model_target = cmp.trials_per_model
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
                grasp_confidence=m.grasp_confidence, consistency_score=m.consistency_score))
        msg.message = result.message + (f". {self._note}" if self._note else "")
        return msg, operator_summary(self._id, msg.state_name, cmp, result, self._note)

    def _publish(self) -> str:
        with self._lock:
            msg, summary = self._status()
        self._status_pub.publish(msg)
        return summary

    def _finish_if_final(self) -> None:
        """After a trial: a final verdict completes the comparison; then recommend or deploy the winner."""
        assert self._cmp is not None
        result = self._cmp.result()
        if not result.complete:
            return
        self._state = ModelComparisonStatus.STATE_COMPLETED
        if not result.winner:
            self._note = "No winner: keep the deployed model (or plan a larger comparison)."
        elif self.p["auto_deploy_winner"]:
            self._note = f"Deploying {result.winner} (auto_deploy_winner)..."
            threading.Thread(target=self._deploy, args=(self._id, result.winner), daemon=True).start()
        else:
            self._note = (f"Recommendation: deploy {result.winner} (POST /models/{result.winner}/deploy on the "
                          "policy server; auto_deploy_winner is false).")
        self.get_logger().info(f"comparison {self._id} COMPLETED: {result.message}. {self._note}")

    # --- services ------------------------------------------------------------------------------------------
    def _on_start(self, req: CompareModels.Request, res: CompareModels.Response) -> CompareModels.Response:
        ids = [str(m).strip() for m in req.model_ids]
        mode = req.mode.strip().lower() or (MODE_AB if len(ids) == 2 else MODE_DETAILED)
        with self._lock:
            running = self._id if self._state == ModelComparisonStatus.STATE_RUNNING else ""
        if running:
            res.success, res.message = False, (f"comparison {running} is running; stop it first "
                                               "(/model_comparison/stop)")
            return res
        try:
            if not math.isfinite(req.alpha):
                raise ValueError(f"alpha must be a number, got {req.alpha}")
            # ids, counts, mode and numbers first: a wrong request needs no server
            cmp = Comparison(ids, mode, int(req.trials_per_model) or int(self.p["trials_per_model"]),
                             float(req.alpha) or float(self.p["alpha"]))
            known = self._known_models()
        except ValueError as exc:
            res.success, res.message = False, str(exc).replace("an A/B test", "A/B")
            return res
        except PolicyClientError as exc:
            res.success, res.message = False, f"cannot list the policy server's models: {exc}"
            return res
        unknown = [m for m in ids if m not in known]
        if unknown:
            res.success = False
            res.message = (f"unknown model id{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                           f"the policy server at {self.p['policy_host']}:{self.p['policy_port']} has: "
                           f"{', '.join(known) or 'none'}")
            return res
        with self._lock:
            self._started += 1
            self._id = f"cmp-{time.strftime('%Y%m%dT%H%M%S')}-{self._started}"
            self._cmp = cmp
            self._scheduler = TrialScheduler(ids, seed=int(self.p["seed"]), planned_per_model=cmp.trials_per_model)
            self._state = ModelComparisonStatus.STATE_RUNNING
            self._note = ""
            res.comparison_id = self._id
        res.success = True
        res.message = (f"{'A/B test' if mode == MODE_AB else 'detailed comparison'} {self._id} of "
                       f"{', '.join(ids)}: {cmp.trials_per_model} trials per model, alpha {cmp.alpha:g}")
        self.get_logger().info(f"started {res.message}")
        self._publish()
        return res

    def _on_record(self, req: RecordTrial.Request, res: RecordTrial.Response) -> RecordTrial.Response:
        with self._lock:
            res.accepted, res.message = self._record(req)
        if res.accepted:
            self._publish()
        else:
            self.get_logger().warning(f"trial rejected: {res.message}")
        return res

    def _record(self, req: RecordTrial.Request) -> tuple[bool, str]:
        if self._cmp is None or self._state != ModelComparisonStatus.STATE_RUNNING:
            last = f" (comparison {self._id} is {STATE_NAMES[self._state]})" if self._id else ""
            return False, f"no comparison is running{last}; start one with /model_comparison/start"
        cmp = self._cmp
        trials = cmp.models[req.model_id].trials if req.model_id in cmp.models else 0
        if req.model_id in cmp.models and trials >= cmp.trials_per_model:
            return False, (f"model {req.model_id!r} already has its {cmp.trials_per_model} planned trials (the "
                           "test uses only those); /model_comparison/next_model names the model to run")
        try:
            cmp.record(req.model_id, bool(req.success), float(req.execution_time_s), float(req.grasp_confidence))
        except ValueError as exc:
            return False, str(exc)
        counts = ", ".join(f"{m.model_id} {m.successes}/{m.trials}" for m in cmp.models.values())
        self._finish_if_final()
        done = f"; comparison {STATE_NAMES[self._state]}" if self._state != ModelComparisonStatus.STATE_RUNNING else ""
        return True, f"recorded {'success' if req.success else 'failure'} of {req.model_id} ({counts}){done}"

    def _on_stop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._state != ModelComparisonStatus.STATE_RUNNING:
                res.success, res.message = False, "no comparison is running"
                return res
            self._state = ModelComparisonStatus.STATE_CANCELLED
            self._note = "Cancelled before a final verdict: nothing is recommended."
            res.success, res.message = True, f"comparison {self._id} cancelled"
        self.get_logger().info(self._publish())
        return res

    def _on_get_status(self, _req: Empty.Request, res: Empty.Response) -> Empty.Response:
        self.get_logger().info(self._publish())
        return res

    def _on_next_model(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if self._cmp is None or self._scheduler is None or self._state != ModelComparisonStatus.STATE_RUNNING:
                res.success, res.message = False, "no comparison is running"
                return res
            model = self._scheduler.next_model({m: t.trials for m, t in self._cmp.models.items()})
        res.success, res.message = model is not None, model or "every model has its planned trials"
        return res


def main(args: list[str] | None = None) -> None:
    run_node(ModelComparisonNode, args)


if __name__ == "__main__":
    main()
