"""``training_web_app``: the RoArm seed's web training interface (``http://ROBOT_IP:8080``) for our stack.

The page and its HTTP API are ``h1_training.web`` (FastAPI on uvicorn, no rclpy); this node is the
:class:`~h1_training.web.backend.Backend` it talks to, made of ROS topics, services and parameters:

    training_web_app                                             # http://127.0.0.1:8080
    training_web_app --ros-args -p host:=192.168.123.164 -p token_file:=$HOME/.h1_web_token   # on the robot LAN

Reads: ``hil_session/status``, ``episode_recorder/status``, ``camera/status``, ``camera/*/compressed``
(thumbnails at ``camera_hz``), ``/lerobot/trainer_status``, ``/lerobot/training_stats`` (the loss curve),
``/training_workflow/status``, ``/lerobot/performance_analytics``, ``/lerobot/dataset_list``,
``model_comparison/status``, ``/parameter_events`` (the workflow node's parameters), and the policy server's
``GET /models``. Calls: ``hil_session/command``, ``hil_session/label``, ``/lerobot/start_data_collection``;
the workflow manager's ``training.*`` parameters, then the seed's ``/training_workflow/trigger_training``
(Empty); ``/training_workflow/cancel_training``;
``/lerobot/refresh_datasets``, ``/lerobot/get_episode_info``, ``/lerobot/export_dataset``, the dataset manager's
delete and flag services; ``/model_comparison/start`` and ``stop``; DeployModel (or the policy server's
``POST /models/<id>/deploy``); and the workflow node's parameter services (what ``ros2 param set`` uses).
Every service name is a parameter. A part of the system that is not running answers 503 with its name.
"""

from __future__ import annotations

import array
import importlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterEvent, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import Empty, Trigger

from h1_training.nodes.common import (
    LATCHED_QOS,
    SENSOR_QOS,
    ParamsMixin,
    ServiceCallError,
    call_service,
    create_destroyable_subscription,
    run_node,
)
from h1_training.params import param
from h1_training.policy.client import PolicyClientError, ServerUnavailable, http_json
from h1_training.stamps import stamp_seconds
from h1_training.web import security
from h1_training.web.app import WebConfig, create_app
from h1_training.web.backend import (
    InvalidValue,
    Listener,
    NotFound,
    Outcome,
    ParamInfo,
    TrainingRequest,
    Unavailable,
    check_param_value,
)
from h1_training.web.server import WebServer
from h1_training.web.thumbnails import thumbnail_b64
from h1_training_interfaces.msg import (
    CameraStatus,
    DatasetList,
    ModelComparisonStatus,
    PerformanceAnalytics,
    RecorderStatus,
    SessionStatus,
    TrainerStatus,
    TrainingStats,
    WorkflowStatus,
)
from h1_training_interfaces.srv import (
    CompareModels,
    DeployModel,
    ExportDataset,
    GetEpisodeInfo,
    LabelEpisode,
    SessionCommand,
    StartDataCollection,
)

CAMERAS = ("ego_cam", "cam_left_wrist", "cam_right_wrist")
# The training request of the page -> the workflow manager's parameters (issue 9's training_workflow_manager);
# other hyperparameters, when the request has any, replace its training.hyperparameters_json.
TRAINING_PARAMS = {"policy_type": "training.policy_type", "steps": "training.steps",
                   "lr": "training.learning_rate", "learning_rate": "training.learning_rate",
                   "batch_size": "training.batch_size"}
HYPERPARAMETERS_JSON = "training.hyperparameters_json"
MAX_LOSS_POINTS = 5000

@dataclass
class WebAppParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    host: str = param("127.0.0.1",
        "address the web app binds (the robot's LAN address to reach it from another machine; a non-loopback "
        "address needs a token or allow_open_lan)",
        read_only=True)
    port: int = param(8080, "HTTP port (0 = any free port; the log says which)", min=0, max=65535, read_only=True)
    token: str = param("",
        "access token for the API and live stream (\"\" = token_file, else $H1_WEB_TOKEN, else none); a "
        "parameter is readable by anyone on the ROS graph: prefer token_file",
        read_only=True)
    token_file: str = param("", "file holding the access token (first line; keep it mode 600)", read_only=True)
    allow_open_lan: bool = param(False, "serve a non-loopback address without a token (not recommended)",
        read_only=True)
    data_roots: list[str] = param(["data"],
        "datasets the page may act on must lie under one of these folders (relative to the working directory;"
        " [] = no check)",
        read_only=True)
    camera_hz: float = param(2.0, "camera thumbnails pushed to the page per camera per second (0 = none)",
        min=0.0, max=15.0)
    thumbnail_width: int = param(160, "thumbnail width [px]", min=32, max=640)
    workflow_node: str = param("/training_workflow_manager",
                               "node whose parameters the workflow section shows and sets")
    workflow_param_prefix: str = param("workflow.", "only parameters starting with this (\"\" = all)")
    policy_host: str = param("127.0.0.1", "policy server (h1-training serve) host: GET /models, deploy fallback")
    policy_port: int = param(8000, "policy server port", min=1, max=65535)
    policy_api_key: str = param("", "policy server API key (\"\" = $H1_POLICY_API_KEY, else none)")
    models_period_s: float = param(5.0, "how often the model list is read from the policy server [s]",
        min=0.5, max=3600.0)
    service_timeout_s: float = param(5.0, "timeout of a service call [s]", min=0.1, max=120.0)
    export_timeout_s: float = param(900.0, "timeout of an export [s]", min=1.0, max=86400.0)
    session_service: str = param("/hil_session/command", "SessionCommand service of hil_session")
    label_service: str = param("/hil_session/label", "LabelEpisode service of hil_session")
    training_node: str = param("/training_workflow_manager",
        "node whose training.* parameters (policy_type, steps, learning_rate, batch_size, "
        "hyperparameters_json) the training form sets before the trigger")
    trigger_training_service: str = param("/training_workflow/trigger_training", "the seed's std_srvs/Empty")
    cancel_training_service: str = param("/training_workflow/cancel_training", "std_srvs/Trigger")
    deploy_service: str = param("/training_workflow/deploy_model",
        "DeployModel service; when not offered, the policy server's POST /models/<id>/deploy")
    delete_episode_service: str = param("/lerobot/delete_episode",
        "dataset manager: move an episode to the trash (request fields dataset, index)")
    flag_episode_service: str = param("/lerobot/set_episode_excluded",
        "dataset manager: flag an episode \"exclude from training\" (request fields dataset, index and "
        "value/flagged/exclude)")


PARAMS = WebAppParams

_PTYPE = {ParameterType.PARAMETER_BOOL: "bool", ParameterType.PARAMETER_INTEGER: "int",
          ParameterType.PARAMETER_DOUBLE: "float", ParameterType.PARAMETER_STRING: "str",
          ParameterType.PARAMETER_STRING_ARRAY: "list", ParameterType.PARAMETER_INTEGER_ARRAY: "list",
          ParameterType.PARAMETER_DOUBLE_ARRAY: "list", ParameterType.PARAMETER_BOOL_ARRAY: "list"}


def read_token_file(path: str) -> str:
    """The first line of ``path`` ("" when no path is given); a missing, unreadable or empty file is an error."""
    if not path:
        return ""
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ValueError(f"token_file {path}: {exc}") from exc
    if not text:
        raise ValueError(f"token_file {path} is empty")
    return text.splitlines()[0].strip()


def msg_to_dict(msg: Any) -> Any:
    """A ROS message as JSON-able data (times as float seconds, arrays as lists)."""
    if hasattr(msg, "get_fields_and_field_types"):
        fields = msg.get_fields_and_field_types()
        if set(fields) == {"sec", "nanosec"}:
            return stamp_seconds(msg)
        return {name: msg_to_dict(getattr(msg, name)) for name in fields}
    if isinstance(msg, (list, tuple, array.array)) or type(msg).__module__ == "numpy":
        return [msg_to_dict(x) for x in list(msg)] if not hasattr(msg, "tolist") else msg.tolist()
    if isinstance(msg, bytes):
        return list(msg)
    return msg


def param_value(value: ParameterValue) -> Any:
    t = value.type
    return {ParameterType.PARAMETER_BOOL: lambda: value.bool_value,
            ParameterType.PARAMETER_INTEGER: lambda: value.integer_value,
            ParameterType.PARAMETER_DOUBLE: lambda: value.double_value,
            ParameterType.PARAMETER_STRING: lambda: value.string_value,
            ParameterType.PARAMETER_STRING_ARRAY: lambda: list(value.string_array_value),
            ParameterType.PARAMETER_INTEGER_ARRAY: lambda: list(value.integer_array_value),
            ParameterType.PARAMETER_DOUBLE_ARRAY: lambda: list(value.double_array_value),
            ParameterType.PARAMETER_BOOL_ARRAY: lambda: list(value.bool_array_value)}.get(t, lambda: None)()


def to_param_value(kind: str, value: Any, current: Any) -> ParameterValue:
    if kind == "bool":
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=bool(value))
    if kind == "int":
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(value))
    if kind == "float":
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))
    if kind == "str":
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
    sample = (current or value or [""])[0] if (current or value) else ""
    if isinstance(sample, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL_ARRAY, bool_array_value=[bool(x) for x in value])
    if isinstance(sample, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=[int(x) for x in value])
    if isinstance(sample, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(x) for x in value])
    return ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=[str(x) for x in value])


class TrainingWebAppNode(ParamsMixin, Node):
    """The node and the web app's Backend in one object (the node is the adapter; all web logic is in web/)."""

    PARAMS = PARAMS

    def __init__(self) -> None:
        super().__init__("training_web_app")
        p = self.declare_specs()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._state: dict[str, dict[str, Any]] = {t: {} for t in (
            "session", "recorder", "cameras", "trainer", "stats", "datasets", "comparison", "workflow",
            "analytics", "models", "params")}
        self._state["loss"] = {"job_id": "", "points": []}
        self._svc_clients: dict[tuple[Any, str], Any] = {}
        self._last_thumb: dict[str, float] = {}
        self._group = ReentrantCallbackGroup()

        def sub(msg_type: Any, topic: str, key: str, qos: Any = LATCHED_QOS) -> None:
            self.create_subscription(msg_type, topic, lambda m: self._set(key, msg_to_dict(m)), qos,
                                     callback_group=self._group)

        sub(SessionStatus, "hil_session/status", "session")
        sub(RecorderStatus, "episode_recorder/status", "recorder")
        sub(CameraStatus, "camera/status", "cameras")
        sub(TrainerStatus, "/lerobot/trainer_status", "trainer")
        sub(WorkflowStatus, "/training_workflow/status", "workflow")
        sub(PerformanceAnalytics, "/lerobot/performance_analytics", "analytics")
        sub(ModelComparisonStatus, "model_comparison/status", "comparison")
        self.create_subscription(DatasetList, "/lerobot/dataset_list",
                                 lambda m: self._set("datasets", {"datasets": msg_to_dict(m)["datasets"]}),
                                 LATCHED_QOS, callback_group=self._group)
        self.create_subscription(TrainingStats, "/lerobot/training_stats", self._on_stats,
                                 QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
                                 callback_group=self._group)
        self._camera_subs: list[Any] = []  # only while a page is open (see _update_camera_subs)
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_param_event, 50,
                                 callback_group=self._group)
        self.create_timer(p["models_period_s"], self._poll_models, callback_group=self._group)
        threading.Thread(target=self._poll_models, daemon=True).start()

        token = p["token"] or read_token_file(p["token_file"]) or os.environ.get("H1_WEB_TOKEN", "")
        refusal = security.check_bind(p["host"], token, p["allow_open_lan"])
        if refusal:
            raise ValueError(refusal)
        if token and security.is_loopback(p["host"]):
            self.get_logger().info("a token is configured: log in at /login")
        cfg = WebConfig(token=token, data_roots=list(p["data_roots"]))
        app = create_app(self, cfg)
        self._hub = app.state.hub
        self.server = WebServer(app, p["host"], p["port"])
        self.server.start()
        self.create_timer(1.0, self._update_camera_subs, callback_group=self._group)
        # the line `h1-training demo`, the tests and the bench wait for
        self.get_logger().info(f"training web app listening on {self.server.url}")

    # --- live state ------------------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return remove

    def _set(self, topic: str, payload: dict[str, Any], store: bool = True) -> None:
        # Listeners are called under the lock (they only queue: LiveHub.publish never blocks), so two callback
        # threads cannot hand the page an older status after a newer one.
        with self._lock:
            if store:
                self._state[topic] = payload
            for fn in self._listeners:
                fn(topic, payload)

    def state(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            out = dict(self._state)
            out["loss"] = {"job_id": self._state["loss"]["job_id"], "points": list(self._state["loss"]["points"])}
            return out

    def _on_stats(self, msg: TrainingStats) -> None:
        stats = msg_to_dict(msg)
        point = [int(msg.step), float(msg.loss)]
        with self._lock:  # one lock for the series and its events: points reach the page in order
            loss = self._state["loss"]
            reset = loss["job_id"] != msg.job_id
            if reset:
                loss = self._state["loss"] = {"job_id": msg.job_id, "points": []}
            # the workflow manager republishes the latest stats periodically: one point per step
            new = not loss["points"] or point[0] > loss["points"][-1][0]
            if new:
                loss["points"].append(point)
            if len(loss["points"]) > MAX_LOSS_POINTS:  # keep the whole run's shape: every other old point
                loss["points"][: MAX_LOSS_POINTS // 2] = loss["points"][: MAX_LOSS_POINTS // 2: 2]
            self._state["stats"] = stats
            for fn in self._listeners:
                fn("stats", stats)
                if new:
                    fn("loss", {"job_id": msg.job_id, "points": [point], "reset": reset})

    def _update_camera_subs(self) -> None:
        """Subscribe to the 30 Hz camera streams only while a page watches (and thumbnails are on): with no page
        open the node costs the robot nothing for images."""
        want = self._hub.subscribers > 0 and self.p["camera_hz"] > 0
        if want and not self._camera_subs:
            self._camera_subs = [
                create_destroyable_subscription(self, CompressedImage, f"camera/{cam}/compressed",
                                         lambda m, cam=cam: self._on_image(cam, m), SENSOR_QOS,
                                         callback_group=self._group) for cam in CAMERAS]
        elif not want and self._camera_subs:
            for sub in self._camera_subs:
                self.destroy_subscription(sub)
            self._camera_subs = []

    def _on_image(self, cam: str, msg: CompressedImage) -> None:
        hz = self.p["camera_hz"]
        now = time.monotonic()
        if hz <= 0 or now - self._last_thumb.get(cam, 0.0) < 1.0 / hz:
            return
        self._last_thumb[cam] = now
        b64 = thumbnail_b64(bytes(msg.data), self.p["thumbnail_width"])
        if b64 is not None:
            self._set(f"camera/{cam}", {"name": cam, "jpeg_b64": b64, "stamp": msg_to_dict(msg.header.stamp),
                                        "placeholder": msg.header.frame_id.endswith("_placeholder")})

    def _poll_models(self) -> None:
        key = self.p["policy_api_key"] or os.environ.get("H1_POLICY_API_KEY") or None
        try:
            reply = http_json(self.p["policy_host"], self.p["policy_port"], "/models", api_key=key, timeout=2.0)
            payload = {"models": [m.get("id") or m.get("model_id") for m in reply.get("models", [])],
                       "deployed": reply.get("default", "")}
        except (PolicyClientError, ServerUnavailable, AttributeError) as exc:
            payload = {"error": f"policy server: {exc}"}
        if payload != self._state.get("models"):
            self._set("models", payload)

    def _on_param_event(self, msg: ParameterEvent) -> None:
        if msg.node.rstrip("/") == "/" + self.p["workflow_node"].strip("/"):
            threading.Thread(target=self._publish_params, daemon=True).start()

    def _publish_params(self) -> None:
        try:
            params = [x.as_dict() for x in self.workflow_parameters()]
            self._set("params", {"node": self.p["workflow_node"], "parameters": params})
        except Unavailable as exc:
            self._set("params", {"node": self.p["workflow_node"], "error": str(exc)})

    # --- services --------------------------------------------------------------------------------------------
    def _client(self, srv_type: Any, name: str) -> Any:
        with self._lock:
            client = self._svc_clients.get((srv_type, name))
            if client is None:
                client = self._svc_clients[(srv_type, name)] = self.create_client(srv_type, name,
                                                                              callback_group=self._group)
            return client

    def _offered(self, name: str) -> str | None:
        """The type ("pkg/srv/Name") of service ``name`` if some node offers it now."""
        for srv, types in self.get_service_names_and_types():
            if srv == name and types:
                return types[0]
        return None

    def _call(self, srv_type: Any, name: str, request: Any, timeout: float | None = None) -> Any:
        timeout = self.p["service_timeout_s"] if timeout is None else timeout
        client = self._client(srv_type, name)
        if not client.wait_for_service(timeout_sec=min(1.0, timeout)):
            raise Unavailable(f"{name} is not offered: is its node running?")
        try:
            return call_service(client, request, timeout, name)
        except ServiceCallError as exc:
            raise Unavailable(str(exc)) from exc

    # --- session ---------------------------------------------------------------------------------------------
    def session_command(self, key: str) -> Outcome:
        r = self._call(SessionCommand, self.p["session_service"], SessionCommand.Request(key=key))
        return Outcome(r.accepted, r.message or f"'{key}' {'accepted' if r.accepted else 'refused'}",
                       {"state_name": r.state_name, "prompt": r.prompt})

    def session_label(self, success: bool, note: str) -> Outcome:
        req = LabelEpisode.Request(success=LabelEpisode.Request.SUCCESS_OK if success else
                                   LabelEpisode.Request.SUCCESS_FAILED, note=note)
        r = self._call(LabelEpisode, self.p["label_service"], req)
        return Outcome(r.accepted, r.message)

    def start_data_collection(self, mode: str, target_episodes: int) -> Outcome:
        r = self._call(StartDataCollection, "/lerobot/start_data_collection",
                       StartDataCollection.Request(mode=mode, target_episodes=target_episodes))
        return Outcome(r.success, r.message)

    # --- training --------------------------------------------------------------------------------------------
    def start_training(self, request: TrainingRequest) -> Outcome:
        """The workflow manager's way: its ``training.*`` parameters, then the seed's trigger_training (Empty)."""
        trigger = self.p["trigger_training_service"]
        if not self._offered(trigger):
            raise Unavailable(f"{trigger} is not offered: is training_workflow_manager running?")
        node = self.p["training_node"]
        have = {p.name: p for p in self.node_parameters(node, "training.")}
        wanted: dict[str, Any] = {TRAINING_PARAMS["policy_type"]: request.policy_type}
        if request.steps:
            wanted[TRAINING_PARAMS["steps"]] = request.steps
        extra = {}
        for key, value in request.hyperparameters.items():
            if key in TRAINING_PARAMS:
                wanted[TRAINING_PARAMS[key]] = value
            else:
                extra[key] = value
        if extra and HYPERPARAMETERS_JSON in have:  # the request's extras replace the earlier ones
            wanted[HYPERPARAMETERS_JSON] = json.dumps(extra, sort_keys=True)
        missing = [n for n in wanted if n not in have] + [f"hyperparameter {k}" for k in extra
                                                          if HYPERPARAMETERS_JSON not in have]
        checked = {}
        for name, value in wanted.items():  # check them all before changing any
            if name in have:
                checked[name], reason = check_param_value(have[name], value)
                if reason:
                    raise InvalidValue(f"{node}: {reason}")
        for name, value in checked.items():
            if value != have[name].value:
                self.set_node_parameter(node, have[name], value)
        self._call(Empty, trigger, Empty.Request())
        msg = f"training requested from {node} ({request.policy_type}); its status shows the job"
        if request.dataset:
            missing.append(f"dataset {request.dataset} (the workflow manager trains on its workflow.data_dir)")
        if missing:
            msg += "; not passed: " + ", ".join(missing)
        return Outcome(True, msg)

    def stop_training(self) -> Outcome:
        r = self._call(Trigger, self.p["cancel_training_service"], Trigger.Request())
        return Outcome(r.success, r.message)

    # --- datasets --------------------------------------------------------------------------------------------
    def refresh_datasets(self) -> Outcome:
        self._call(Empty, "/lerobot/refresh_datasets", Empty.Request(), timeout=max(30.0, self.p["service_timeout_s"]))
        return Outcome(True, "dataset list refreshed")

    def episode(self, dataset: str, index: int) -> dict[str, Any]:
        r = self._call(GetEpisodeInfo, "/lerobot/get_episode_info", GetEpisodeInfo.Request(dataset=dataset,
                                                                                            index=index))
        if not r.success:
            raise NotFound(r.message)
        return {**msg_to_dict(r.episode), "message": r.message}

    def export_dataset(self, dataset: str, fmt: str) -> Outcome:
        r = self._call(ExportDataset, "/lerobot/export_dataset", ExportDataset.Request(dataset=dataset, format=fmt),
                       timeout=self.p["export_timeout_s"])
        return Outcome(r.success, r.message, {"output_path": r.output_path})

    def _episode_service(self, name: str, fields: dict[str, Any]) -> Outcome:
        """Call a dataset-manager episode service by name, with the type the graph says it has (issue 9's
        EpisodeAction: dataset, index, value): the request's fields that match ours are filled."""
        type_name = self._offered(name)
        if type_name is None:
            raise Unavailable(f"{name} is not offered: this dataset_manager cannot do that yet")
        pkg, _, cls = type_name.split("/")
        srv_type = getattr(importlib.import_module(f"{pkg}.srv"), cls)
        req = srv_type.Request()
        have = req.get_fields_and_field_types()
        aliases = {"index": ("index", "episode_index"), "flagged": ("value", "flagged", "exclude", "data")}
        for ours, value in fields.items():
            for theirs in aliases.get(ours, (ours,)):
                if theirs in have:
                    setattr(req, theirs, value)
                    break
        r = self._call(srv_type, name, req)
        ok = bool(getattr(r, "success", getattr(r, "accepted", False)))
        return Outcome(ok, getattr(r, "message", "") or ("done" if ok else "refused"))

    def delete_episode(self, dataset: str, index: int) -> Outcome:
        return self._episode_service(self.p["delete_episode_service"], {"dataset": dataset, "index": index})

    def flag_episode(self, dataset: str, index: int, flagged: bool) -> Outcome:
        return self._episode_service(self.p["flag_episode_service"],
                                     {"dataset": dataset, "index": index, "flagged": flagged})

    # --- comparison ------------------------------------------------------------------------------------------
    def start_comparison(self, model_ids: list[str], mode: str, trials_per_model: int, alpha: float) -> Outcome:
        r = self._call(CompareModels, "/model_comparison/start", CompareModels.Request(
            model_ids=model_ids, mode=mode, trials_per_model=trials_per_model, alpha=alpha))
        return Outcome(r.success, r.message, {"comparison_id": r.comparison_id})

    def stop_comparison(self) -> Outcome:
        r = self._call(Trigger, "/model_comparison/stop", Trigger.Request())
        return Outcome(r.success, r.message)

    def deploy_model(self, model_id: str) -> Outcome:
        if self._offered(self.p["deploy_service"]):
            r = self._call(DeployModel, self.p["deploy_service"], DeployModel.Request(model_id=model_id),
                           timeout=max(30.0, self.p["service_timeout_s"]))
            return Outcome(r.success, r.message, {"previous_model_id": r.previous_model_id})
        key = self.p["policy_api_key"] or os.environ.get("H1_POLICY_API_KEY") or None
        previous = self._state.get("models", {}).get("deployed", "")
        try:
            http_json(self.p["policy_host"], self.p["policy_port"], f"/models/{model_id}/deploy", method="POST",
                      body={}, api_key=key, timeout=30.0)
        except ServerUnavailable as exc:
            raise Unavailable(f"policy server: {exc}") from exc
        except PolicyClientError as exc:
            return Outcome(False, str(exc))
        self._poll_models()
        return Outcome(True, f"{model_id} deployed on the policy server", {"previous_model_id": previous})

    # --- workflow parameters ---------------------------------------------------------------------------------
    @staticmethod
    def _param_service(node: str, kind: str) -> str:
        return "/" + node.strip("/") + "/" + kind

    def node_parameters(self, node: str, prefix: str) -> list[ParamInfo]:
        """``node``'s parameters whose names start with ``prefix``, as ``ros2 param describe`` shows them."""
        listed = self._call(ListParameters, self._param_service(node, "list_parameters"), ListParameters.Request(
            prefixes=[prefix.rstrip(".")] if prefix.endswith(".") else [], depth=0))  # ROS prefixes are dotted
        names = sorted(n for n in listed.result.names if n.startswith(prefix))
        if not names:
            return []
        values = self._call(GetParameters, self._param_service(node, "get_parameters"),
                            GetParameters.Request(names=names))
        descs = self._call(DescribeParameters, self._param_service(node, "describe_parameters"),
                           DescribeParameters.Request(names=names))
        out = []
        for name, value, desc in zip(names, values.values, descs.descriptors):
            lo = hi = None
            if desc.floating_point_range:
                lo, hi = desc.floating_point_range[0].from_value, desc.floating_point_range[0].to_value
            elif desc.integer_range:
                lo, hi = desc.integer_range[0].from_value, desc.integer_range[0].to_value
            out.append(ParamInfo(name, _PTYPE.get(value.type, "unknown"), param_value(value), desc.description,
                                 lo, hi, bool(desc.read_only)))
        return out

    def set_node_parameter(self, node: str, info: ParamInfo, value: Any) -> None:
        """What ``ros2 param set`` does; InvalidValue with the node's reason when it refuses."""
        req = SetParameters.Request(parameters=[ParameterMsg(name=info.name, value=to_param_value(info.type, value,
                                                                                                 info.value))])
        result = self._call(SetParameters, self._param_service(node, "set_parameters"), req).results[0]
        if not result.successful:
            raise InvalidValue(f"{node} refused {info.name}={value!r}: {result.reason}")

    def workflow_parameters(self) -> list[ParamInfo]:
        return self.node_parameters(self.p["workflow_node"], self.p["workflow_param_prefix"])

    def set_workflow_parameter(self, name: str, value: Any) -> Outcome:
        node = self.p["workflow_node"]
        info = next((p for p in self.workflow_parameters() if p.name == name), None)
        if info is None:
            raise NotFound(f"{node} has no parameter {name!r}")
        self.set_node_parameter(node, info, value)
        self._publish_params()
        return Outcome(True, f"{name} = {value!r} on {node}")

    def close(self) -> None:
        self.server.stop()


def main(args: list[str] | None = None) -> None:
    run_node(TrainingWebAppNode, args, threads=4)


if __name__ == "__main__":
    main()
