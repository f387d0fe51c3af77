"""training_workflow_manager: the RoArm seed's training automation on the H1 stack (logic in h1_training.workflow).

    ros2 run h1_training training_workflow_manager --ros-args -p server.url:=http://127.0.0.1:8000 \
        -p workflow.data_dir:=data/h1_data
    ros2 service call /training_workflow/start_auto_workflow std_srvs/srv/SetBool "data: true"
    ros2 service call /training_workflow/trigger_training std_srvs/srv/Empty
    ros2 topic echo /training_workflow/status
    ros2 topic echo /lerobot/trainer_status
    ros2 topic echo /lerobot/training_stats
    ros2 topic echo /lerobot/performance_analytics
    ros2 param set /training_workflow_manager workflow.min_episodes_before_training 50
    ros2 service call /training_workflow/pause_training std_srvs/srv/Trigger        # resume_training, cancel_training
    ros2 service call /training_workflow/deploy_model h1_training_interfaces/srv/DeployModel "{model_id: ...}"
    ros2 service call /training_workflow/rollback std_srvs/srv/Trigger
    ros2 service call /lerobot/start_data_collection h1_training_interfaces/srv/StartDataCollection \
        "{mode: 'hil', target_episodes: 100}"
    ros2 param set /training_workflow_manager evaluation.online_trials 40     # auto-deploy asks model_comparison

The seed's ``trigger_training`` is a std_srvs/Empty (no reply): the outcome is on ``/training_workflow/status``
(``message``) and in the log. ``start_auto_workflow`` sets ``workflow.auto_train_enabled`` (one switch, two
ways to reach it).

Online evaluation (``evaluation.online_trials`` > 0, see ``workflow/machine.py``): this node only carries the
runner's effects to ``<comparison_node>/{start,record_trial,stop,next_model}`` and hil_session's parameter
service (the ``model`` pin), and hands ``<comparison_node>/status`` to the runner.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import SetParameters
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Empty, SetBool, Trigger

from h1_training.nodes.common import LATCHED_QOS, ParamsMixin, ServiceCallError, call_service, log_at, run_node
from h1_training.params import param
from h1_training.policy.train_request import TRAINING_DEVICES
from h1_training.stamps import set_stamp
from h1_training.workflow.collection import PARAMETER as COLLECTION_PARAMETER
from h1_training.workflow.collection import CollectionPlan
from h1_training.workflow.machine import (
    JOB_STATE,
    MIN_ONLINE_TRIALS,
    POLICY_TYPES,
    WorkflowConfig,
    check_config,
    parse_hyperparameters,
)
from h1_training.workflow.runner import RunnerConfig, WorkflowRunner
from h1_training_interfaces.msg import (
    ModelComparisonStatus,
    PerformanceAnalytics,
    SessionStatus,
    TrainerStatus,
    TrainingStats,
    WorkflowStatus,
)
from h1_training_interfaces.srv import CompareModels, DeployModel, RecordTrial, SessionCommand, StartDataCollection

# the workflow's own defaults (workflow/machine.py, workflow/runner.py) are the ones the ROS parameters start
# from: each default is declared once
_WORKFLOW_DEFAULTS = WorkflowConfig()
_RUNNER_DEFAULTS = RunnerConfig(data_dir=Path(), state_file=Path())


@dataclass
class WorkflowManagerParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    workflow_min_episodes_before_training: int = param(_WORKFLOW_DEFAULTS.min_episodes_before_training,
        "train when this many new episodes are on disk",
        min=1, max=100000, name="workflow.min_episodes_before_training")
    workflow_auto_train_enabled: bool = param(_WORKFLOW_DEFAULTS.auto_train_enabled,
        "start training by itself (count or interval); /training_workflow/start_auto_workflow sets it",
        name="workflow.auto_train_enabled")
    workflow_training_trigger_interval_hours: float = param(_WORKFLOW_DEFAULTS.training_trigger_interval_hours,
        "also train when this long has passed since the last training and there is at least one new episode "
        "(0 = off)",
        min=0.0, max=8760.0, name="workflow.training_trigger_interval_hours")
    workflow_auto_deploy_enabled: bool = param(_WORKFLOW_DEFAULTS.auto_deploy_enabled,
        "deploy a new model by itself when it is better on the held-out episodes with statistical evidence (and, "
        "with evaluation.online_trials, when model_comparison's online A/B names it the winner)",
        name="workflow.auto_deploy_enabled")
    workflow_data_dir: str = param("data/h1_data",
        "the recorder's save_dir (training_session_epoch*/episode_*); its relative paths are sent to the "
        "server, whose --data-dir holds the synced copy",
        name="workflow.data_dir")
    workflow_state_file: str = param("data/workflow_state.json", "history, models and counters (survives restarts)",
        name="workflow.state_file")
    workflow_poll_period_s: float = param(_RUNNER_DEFAULTS.poll_period_s,
        "rescan the data and poll the server this often [s]",
        min=0.1, max=3600.0, name="workflow.poll_period_s")
    workflow_holdout_every: int = param(_WORKFLOW_DEFAULTS.holdout_every,
        "every n-th new episode is held out for evaluation",
        min=2, max=100, name="workflow.holdout_every")
    workflow_job_retry_s: float = param(_WORKFLOW_DEFAULTS.job_retry_s,
        "wait after a failed or lost job before training again [s]",
        min=0.0, max=86400.0, name="workflow.job_retry_s")
    server_url: str = param(_RUNNER_DEFAULTS.server_url, "the GPU server (h1-training serve)", name="server.url")
    server_api_key: str = param(_RUNNER_DEFAULTS.api_key, "its API key (\"\" = none)", name="server.api_key")
    server_timeout_s: float = param(_RUNNER_DEFAULTS.http_timeout_s,
        "HTTP timeout [s]", min=0.1, max=60.0, name="server.timeout_s")
    training_policy_type: str = param(_WORKFLOW_DEFAULTS.policy_type,
        "policy to train", choices=POLICY_TYPES, name="training.policy_type")
    training_steps: int = param(_WORKFLOW_DEFAULTS.steps,
        "training steps per job", min=1, max=10000000, name="training.steps")
    training_batch_size: int = param(_WORKFLOW_DEFAULTS.batch_size,
        "batch size", min=1, max=4096, name="training.batch_size")
    training_learning_rate: float = param(_WORKFLOW_DEFAULTS.learning_rate, "learning rate (0 = the policy's preset)",
        min=0.0, max=0.999, name="training.learning_rate")
    training_human_weight: float = param(_WORKFLOW_DEFAULTS.human_weight, "sampling weight of human-correction frames",
        min=0.0, max=100.0, name="training.human_weight")
    training_device: str = param(_WORKFLOW_DEFAULTS.device, "where the server trains (auto: cuda when present)",
        choices=TRAINING_DEVICES, name="training.device")
    training_hyperparameters_json: str = param("", "policy options as a JSON object, e.g. {\"chunk_size\": 20}",
        name="training.hyperparameters_json")
    evaluation_alpha: float = param(_WORKFLOW_DEFAULTS.alpha, "significance level of the deploy gate",
        min=0.001, max=0.5, name="evaluation.alpha")
    evaluation_frames_per_episode: int = param(_RUNNER_DEFAULTS.eval_frames_per_episode,
        "frames queried per held-out episode",
        min=1, max=1000, name="evaluation.frames_per_episode")
    evaluation_send_images: bool = param(_RUNNER_DEFAULTS.eval_send_images,
        "send the camera images with evaluation queries",
        name="evaluation.send_images")
    evaluation_online_trials: int = param(_WORKFLOW_DEFAULTS.online_trials,
        "0 = auto-deploy on the offline gate alone; N = auto-deploy also asks for an online A/B on model_comparison "
        f"(at most N trials per model, N >= {MIN_ONLINE_TRIALS}) and deploys only when it names the new model the "
        "winner",
        min=0, max=100000, name="evaluation.online_trials")
    evaluation_online_timeout_s: float = param(_WORKFLOW_DEFAULTS.online_timeout_s,
        "an online evaluation without a verdict after this long is stopped and the model not deployed [s]",
        min=1.0, max=2592000.0, name="evaluation.online_timeout_s")
    monitor_baseline_trials: int = param(_WORKFLOW_DEFAULTS.baseline_trials,
        "labelled trials after a deploy that set the baseline",
        min=5, max=10000, name="monitor.baseline_trials")
    monitor_window_trials: int = param(_WORKFLOW_DEFAULTS.window_trials, "recent window of the analytics [trials]",
        min=5, max=10000, name="monitor.window_trials")
    monitor_cusum_arl0: float = param(_WORKFLOW_DEFAULTS.cusum_arl0,
        "CUSUM in-control average run length [trials per false alarm]",
        min=10.0, max=1000000.0, name="monitor.cusum_arl0")
    monitor_cusum_odds_ratio: float = param(_WORKFLOW_DEFAULTS.cusum_odds_ratio,
        "failure-odds increase the CUSUM is tuned to detect",
        min=1.01, max=100.0, name="monitor.cusum_odds_ratio")
    monitor_retrain_after_corrections: int = param(_WORKFLOW_DEFAULTS.retrain_after_corrections,
        "recommend retraining after this many corrected episodes",
        min=1, max=100000, name="monitor.retrain_after_corrections")
    status_period_s: float = param(1.0, "republish the status topics this often [s]", min=0.1, max=60.0)
    session_prefix: str = param("hil_session", "namespace of the hil_session node's services (data collection)")
    comparison_node: str = param("model_comparison", "name of the model_comparison node (online evaluation)",
        read_only=True)


PARAMS = WorkflowManagerParams


def workflow_config(p: dict[str, Any]) -> WorkflowConfig:
    return WorkflowConfig(
        min_episodes_before_training=p["workflow.min_episodes_before_training"],
        auto_train_enabled=p["workflow.auto_train_enabled"],
        training_trigger_interval_hours=p["workflow.training_trigger_interval_hours"],
        auto_deploy_enabled=p["workflow.auto_deploy_enabled"], policy_type=p["training.policy_type"],
        steps=p["training.steps"], batch_size=p["training.batch_size"], learning_rate=p["training.learning_rate"],
        human_weight=p["training.human_weight"], device=p["training.device"],
        hyperparameters=parse_hyperparameters(p["training.hyperparameters_json"]),
        holdout_every=p["workflow.holdout_every"], alpha=p["evaluation.alpha"], job_retry_s=p["workflow.job_retry_s"],
        baseline_trials=p["monitor.baseline_trials"], window_trials=p["monitor.window_trials"],
        cusum_arl0=p["monitor.cusum_arl0"], cusum_odds_ratio=p["monitor.cusum_odds_ratio"],
        retrain_after_corrections=p["monitor.retrain_after_corrections"],
        online_trials=p["evaluation.online_trials"], online_timeout_s=p["evaluation.online_timeout_s"])


class ComparisonClient:
    """The runner's :class:`~h1_training.workflow.runner.ComparisonPort`: model_comparison's services and
    hil_session's parameter service (called from the runner's threads, never from a ROS callback)."""

    def __init__(self, node: Node, name: str, session_params: Any, group: Any, timeout_s: float = 5.0) -> None:
        name = name.strip("/")
        self.timeout_s = timeout_s
        self.start_cli = node.create_client(CompareModels, f"{name}/start", callback_group=group)
        self.record_cli = node.create_client(RecordTrial, f"{name}/record_trial", callback_group=group)
        self.stop_cli = node.create_client(Trigger, f"{name}/stop", callback_group=group)
        self.next_cli = node.create_client(Trigger, f"{name}/next_model", callback_group=group)
        self.session_params = session_params

    def _call(self, client: Any, request: Any, what: str) -> Any:
        if not client.wait_for_service(timeout_sec=self.timeout_s):
            raise ConnectionError(f"{what}: service {client.srv_name} not available after {self.timeout_s:g} s")
        try:
            return call_service(client, request, self.timeout_s, what)
        except ServiceCallError as exc:  # sent, no reply (or the call failed): it may have been carried out
            raise TimeoutError(str(exc)) from exc

    def start(self, model_ids: list[str], trials_per_model: int, alpha: float) -> tuple[bool, str, str]:
        req = CompareModels.Request(model_ids=model_ids, mode=CompareModels.Request.MODE_AB,
                                    trials_per_model=trials_per_model, alpha=alpha)
        res = self._call(self.start_cli, req, "model_comparison/start")
        return res.success, res.message, res.comparison_id

    def record(self, model_id: str, success: bool) -> tuple[bool, str]:
        req = RecordTrial.Request(model_id=model_id, success=success, execution_time_s=-1.0, grasp_confidence=-1.0,
                                  score=-1.0)
        res = self._call(self.record_cli, req, "model_comparison/record_trial")
        return res.accepted, res.message

    def stop(self) -> tuple[bool, str]:
        res = self._call(self.stop_cli, Trigger.Request(), "model_comparison/stop")
        return res.success, res.message

    def next_model(self) -> tuple[bool, str]:
        res = self._call(self.next_cli, Trigger.Request(), "model_comparison/next_model")
        return res.success, res.message

    def pin(self, model_id: str) -> str:
        if not self.session_params.service_is_ready():
            return "no hil_session running"
        request = SetParameters.Request(parameters=[Parameter("model", value=model_id).to_parameter_msg()])
        reply = self._call(self.session_params, request, "hil_session model")
        result = reply.results[0] if reply.results else None
        if result is None or not result.successful:
            return f"hil_session refused model={model_id!r}: {result.reason if result is not None else 'no result'}"
        return ""


def comparison_status(msg: ModelComparisonStatus) -> dict[str, Any]:
    """The figures of ``ModelComparisonStatus`` the workflow machine decides on (plain data)."""
    return {"comparison_id": msg.comparison_id, "state": msg.state_name, "winner": msg.winner,
            "stop_reason": msg.stop_reason, "message": msg.message, "e_value": float(msg.e_value),
            "e_threshold": float(msg.e_threshold), "p_value": float(msg.p_value),
            "trials_cap": int(msg.trials_cap), "difference": float(msg.difference),
            "difference_ci": [float(msg.difference_ci_low), float(msg.difference_ci_high)],
            "models": {m.model_id: [int(m.successes), int(m.trials)] for m in msg.models}}


class TrainingWorkflowManager(ParamsMixin, Node):
    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("training_workflow_manager")
        p = self.declare_specs()
        self.add_on_set_parameters_callback(self._check_combined)
        wf_cfg = workflow_config(p)
        state_file = Path(p["workflow.state_file"])
        self.runner = WorkflowRunner(
            RunnerConfig(data_dir=Path(p["workflow.data_dir"]), state_file=state_file, server_url=p["server.url"],
                         api_key=p["server.api_key"], poll_period_s=p["workflow.poll_period_s"],
                         http_timeout_s=p["server.timeout_s"],
                         eval_frames_per_episode=p["evaluation.frames_per_episode"],
                         eval_send_images=p["evaluation.send_images"]),
            wf_cfg, on_update=lambda r: self.publish())
        self._closing = False
        self._pub_lock = threading.Lock()
        group = ReentrantCallbackGroup()
        self.status_pub = self.create_publisher(WorkflowStatus, "/training_workflow/status", LATCHED_QOS)
        self.trainer_pub = self.create_publisher(TrainerStatus, "/lerobot/trainer_status", LATCHED_QOS)
        self.stats_pub = self.create_publisher(TrainingStats, "/lerobot/training_stats", 10)
        self.analytics_pub = self.create_publisher(PerformanceAnalytics, "/lerobot/performance_analytics",
                                                   LATCHED_QOS)
        self.create_service(Empty, "/training_workflow/trigger_training", self._on_trigger, callback_group=group)
        self.create_service(SetBool, "/training_workflow/start_auto_workflow", self._on_auto, callback_group=group)
        for action in ("pause", "resume", "cancel"):
            self.create_service(Trigger, f"/training_workflow/{action}_training",
                                lambda req, res, a=action: self._on_command(a, "", res), callback_group=group)
        self.create_service(DeployModel, "/training_workflow/deploy_model", self._on_deploy, callback_group=group)
        self.create_service(Trigger, "/training_workflow/rollback",
                            lambda req, res: self._on_command("rollback", "", res), callback_group=group)
        self.create_service(StartDataCollection, "/lerobot/start_data_collection", self._on_collect,
                            callback_group=group)
        prefix = p["session_prefix"].strip("/")
        self.session_cli = self.create_client(SessionCommand, f"{prefix}/command", callback_group=group)
        self.session_params_cli = self.create_client(SetParameters, f"{prefix}/set_parameters", callback_group=group)
        self.create_subscription(SessionStatus, f"{prefix}/status", self._on_session_status, LATCHED_QOS,
                                 callback_group=group)
        cmp_name = p["comparison_node"].strip("/")
        # model_comparison computes its whole status (exact tests) on every trial: allow for a loaded machine
        self.runner.comparison = ComparisonClient(self, cmp_name, self.session_params_cli, group, timeout_s=15.0)
        self.create_subscription(ModelComparisonStatus, f"{cmp_name}/status",
                                 lambda msg: self.runner.observe_comparison(comparison_status(msg)), LATCHED_QOS,
                                 callback_group=group)
        self.collection: CollectionPlan | None = None
        self.session_status: SessionStatus | None = None
        self._timer = self.create_timer(p["status_period_s"], self._on_timer, callback_group=group)
        self.runner.start()
        self.get_logger().info(f"training_workflow_manager: data {p['workflow.data_dir']}, server {p['server.url']}, "
                               f"state {state_file}; {self.runner.state_message}")

    # --- parameters ------------------------------------------------------------------------------------------
    def _check_combined(self, params: list[Parameter]) -> SetParametersResult:
        values = dict(self.p)
        values.update({q.name: q.value for q in params if q.name in values})
        try:
            problems = check_config(workflow_config(values))
        except (ValueError, TypeError) as exc:
            problems = [str(exc)]
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        if not str(values["server.url"]).startswith(("http://", "https://")):
            return SetParametersResult(successful=False, reason="server.url must start with http:// or https://")
        return SetParametersResult(successful=True)

    def on_params_changed(self, changed: dict[str, Any]) -> None:
        url = changed.get("server.url")
        key = changed.get("server.api_key")
        if "workflow.poll_period_s" in changed:
            self.runner.cfg.poll_period_s = changed["workflow.poll_period_s"]
        for name, attr in (("evaluation.frames_per_episode", "eval_frames_per_episode"),
                           ("evaluation.send_images", "eval_send_images")):
            if name in changed:
                setattr(self.runner.cfg, attr, changed[name])
        self.runner.set_config(workflow_config(self.p), server_url=url, api_key=key)
        self.get_logger().info(f"parameters changed: {changed}")

    # --- services --------------------------------------------------------------------------------------------
    def _on_trigger(self, req: Empty.Request, res: Empty.Response) -> Empty.Response:
        ok, msg = self.runner.command("trigger")
        self._log(ok, f"trigger_training: {msg}")
        with self.runner.lock:
            self.runner.machine.message = msg
        self.publish()
        return res

    def _on_auto(self, req: SetBool.Request, res: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter("workflow.auto_train_enabled", value=bool(req.data))])[0]
        res.success = result.successful
        res.message = (f"automatic training {'enabled' if req.data else 'disabled'}" if result.successful
                       else result.reason)
        self.runner.wake()
        return res

    def _on_command(self, name: str, arg: str, res: Any) -> Any:
        ok, msg = self.runner.command(name, arg)
        res.success, res.message = ok, msg
        self._log(ok, f"{name}: {msg}")
        self.publish()
        return res

    def _log(self, ok: bool, text: str) -> None:
        log_at(self, "info" if ok else "warn", text)

    def _on_deploy(self, req: DeployModel.Request, res: DeployModel.Response) -> DeployModel.Response:
        res.previous_model_id = self.runner.machine.current_model
        return self._on_command("deploy", req.model_id.strip(), res)

    # --- data collection -------------------------------------------------------------------------------------
    def _on_session_status(self, msg: SessionStatus) -> None:
        self.session_status = msg
        plan = self.collection
        if plan is None:
            return
        key = plan.next_key(msg.state_name, msg.episodes_total)
        if key:
            threading.Thread(target=self._send_key, args=(key,), daemon=True).start()

    def _send_key(self, key: str) -> None:
        try:
            reply = call_service(self.session_cli, SessionCommand.Request(key=key), 5.0, f"data collection key {key!r}")
        except ServiceCallError as exc:
            self.get_logger().warning(str(exc))
            return
        if not reply.accepted:
            self.get_logger().warning(f"data collection key {key!r} refused: {reply.message}")

    def _set_session_mode(self, mode: str) -> str:
        """hil_session's collection_mode := mode; "" when set, else why not."""
        request = SetParameters.Request(parameters=[Parameter(COLLECTION_PARAMETER, value=mode).to_parameter_msg()])
        try:
            reply = call_service(self.session_params_cli, request, 5.0, f"hil_session {COLLECTION_PARAMETER}")
        except ServiceCallError as exc:
            return f"could not set hil_session's {COLLECTION_PARAMETER} to {mode!r}: {exc}"
        result = reply.results[0] if reply.results else None
        if result is None or not result.successful:
            return (f"hil_session refused {COLLECTION_PARAMETER}={mode!r}: "
                    f"{result.reason if result is not None else 'no result'}")
        return ""

    def _on_collect(self, req: StartDataCollection.Request, res: StartDataCollection.Response):
        mode = req.mode.strip().lower()
        status = self.session_status
        try:
            plan = CollectionPlan.create(mode, req.target_episodes,
                                         status.episodes_total if status is not None else 0)
        except ValueError as exc:
            res.success, res.message = False, str(exc)
            return res
        if status is None or not self.session_cli.wait_for_service(timeout_sec=2.0):
            res.success = False
            res.message = ("no hil_session running (its services drive data collection): start it, e.g. "
                           "`ros2 run h1_training hil_session`, or the sim_hil profile")
            return res
        problem = self._set_session_mode(mode)
        if problem:
            res.success, res.message = False, problem
            return res
        self.collection = plan
        res.success = True
        res.message = plan.describe()
        self.get_logger().info(f"start_data_collection: {res.message}")
        self._on_session_status(status)
        return res

    # --- publishing ------------------------------------------------------------------------------------------
    def publish(self) -> None:
        # the runner's lock first, always: the runner calls this (on_update) while holding it
        with self.runner.lock, self._pub_lock:
            if not self._closing:
                self._publish_locked()

    def _on_timer(self) -> None:
        """The periodic republish skips a round while the runner holds its lock: the runner may be waiting there
        for a service reply (model_comparison, hil_session) that an executor thread must deliver, so timer
        callbacks piling up on the lock would take every thread and the reply would never come. The runner
        publishes itself when it is done (on_update)."""
        if not self.runner.lock.acquire(blocking=False):
            return
        try:
            with self._pub_lock:
                if not self._closing:
                    self._publish_locked()
        finally:
            self.runner.lock.release()

    def _publish_locked(self) -> None:
        m = self.runner.machine
        now = self.get_clock().now().to_msg()
        st = WorkflowStatus()
        st.header.stamp = now
        st.stage = int(m.stage)
        st.stage_name = m.stage.name
        st.auto_train_enabled = m.config.auto_train_enabled
        st.auto_deploy_enabled = m.config.auto_deploy_enabled
        st.episodes_collected = len(m.new_episodes())
        st.min_episodes_before_training = m.config.min_episodes_before_training
        st.training_trigger_interval_hours = float(m.config.training_trigger_interval_hours)
        set_stamp(st.last_training_time, seconds=m.last_training_time)
        st.current_model_version = m.current_model
        job = m.shown_job()
        st.current_job_id = job.id if job is not None and job.status in ("queued", "running", "paused") else ""
        analytics = m.analytics()
        st.degradation_detected = analytics["degradation_detected"]
        st.recommendations = analytics["recommendations"]
        plan = self.collection
        st.message = m.message + (f" | collection: {plan.describe()}" if plan is not None else "")
        st.server_url = self.runner.api.url
        st.server_reachable = m.server_reachable
        st.server_message = m.server_message
        st.server_in_charge = m.server_in_charge
        st.episodes_total = len(m.eligible())
        st.episodes_held_out = len(m.holdout)
        st.episodes_excluded = sum(1 for f in m.facts.values() if f.valid and f.excluded)
        st.previous_model_version = m.previous_model()
        st.jobs_started = m.counters["jobs_started"]
        st.jobs_failed = m.counters["jobs_failed"]
        st.jobs_lost = m.counters["jobs_lost"]
        st.state_file = str(self.runner.cfg.state_file)
        st.state_message = self.runner.state_message
        self.status_pub.publish(st)

        ts = TrainerStatus()
        ts.header.stamp = now
        ts.server_ready, ts.server_epoch = m.server_ready, m.server_epoch
        if job is None:
            ts.state, ts.state_name, ts.message = 0, "IDLE", "no training job yet"
        else:
            ts.state = JOB_STATE.get(job.status, 0)
            ts.state_name = job.status.upper()
            ts.job_id, ts.policy_type, ts.origin = job.id, job.policy_type, job.origin
            ts.dataset = f"{len(job.episodes)} episode(s)" if job.episodes else ""
            ts.progress_pct = float(100.0 * job.step / job.total_steps) if job.total_steps else 0.0
            ts.model_version = job.model_id or ""
            ts.step, ts.total_steps, ts.error = int(job.step), int(job.total_steps), job.error or ""
            ts.message = (job.reason or ("started by the server's auto-train" if job.origin == "server" else ""))
            if not m.server_reachable and job.status in ("queued", "running", "paused"):
                ts.message = f"GPU server unreachable: last known state shown ({m.server_message})"
        self.trainer_pub.publish(ts)

        if job is not None and job.status in ("running", "paused") and job.step > 0:
            stats = TrainingStats()
            stats.header.stamp = now
            stats.job_id = job.id
            stats.epoch = int(job.epoch)
            stats.step, stats.total_steps = int(job.step), int(job.total_steps)
            stats.loss = float(job.loss) if job.loss is not None else float("nan")
            stats.learning_rate = float(job.lr) if job.lr is not None else float("nan")
            stats.steps_per_second = float(job.steps_per_s)
            stats.eta_s = float(job.eta_s) if job.eta_s is not None else -1.0
            self.stats_pub.publish(stats)

        pa = PerformanceAnalytics()
        pa.header.stamp = now
        a = analytics
        pa.model_version = a["model_version"]
        pa.window_trials = int(a["window_trials"])
        pa.recent_success_rate = float(a["recent_success_rate"])
        pa.baseline_success_rate = float(a["baseline_success_rate"])
        pa.trend_per_100_trials = float(a["trend_per_100_trials"])
        pa.degradation_detected = bool(a["degradation_detected"])
        pa.degradation_p_value = float(a["degradation_p_value"])
        pa.recommendations = a["recommendations"]
        pa.recent_success_ci_low, pa.recent_success_ci_high = float(a["ci_low"]), float(a["ci_high"])
        pa.baseline_trials = int(a["baseline_trials"])
        pa.intervention_rate = float(a["intervention_rate"])
        pa.episodes_per_hour = float(a["episodes_per_hour"])
        pa.corrections_since_deploy = int(a["corrections_since_deploy"])
        pa.cusum_statistic, pa.cusum_threshold = float(a["cusum_statistic"]), float(a["cusum_threshold"])
        pa.cusum_arl0 = float(a["cusum_arl0"])
        pa.degradation_evidence = a["evidence"]
        self.analytics_pub.publish(pa)

    def close(self) -> None:
        with self.runner.lock:
            self._closing = True
        self.runner.stop()


def main(args: list[str] | None = None) -> None:
    run_node(TrainingWorkflowManager, args, threads=4)


if __name__ == "__main__":
    main()

