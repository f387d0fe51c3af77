"""What the Foxglove gateway exposes, and how (no rclpy import; ``nodes/foxglove_gateway_node.py`` adapts it).

Topics
    Every ROS topic in the graph becomes a Foxglove channel of the same name, advertised at once and fed only while
    a client subscribes (the gateway subscribes to ROS on the first client subscription and unsubscribes on the
    last, so nothing is taken off DDS or serialised for nobody).
    - ``sensor_msgs/msg/CompressedImage`` (the three cameras) -> ``foxglove.CompressedImage`` (protobuf, the Image
      panel's own schema), throttled to ``camera_rate_hz``.
    - every other message -> ``json`` with a JSON schema named by its ROS type (``sensor_msgs/msg/JointState``,
      ``diagnostic_msgs/msg/DiagnosticArray``, ``h1_training_interfaces/msg/SessionStatus``). Field names and shape
      are those of the ``.msg`` -- what Foxglove decodes from ``foxglove_bridge``'s CDR -- so the Plot panel reads
      ``/joint_states.position[0]``, the Diagnostics panel accepts ``/diagnostics`` by its schema name, and our
      panels read the same objects from either bridge.
Services
    ROS services under the prefixes below (session, recorder, workflow, comparison, datasets, playback) become
    Foxglove services of the same name with JSON request/response and JSON schemas of the request/response.
Parameters
    Every node's parameters, named ``/<node>.<parameter>`` (foxglove_bridge's convention), read and written through
    the node's own ``get_parameters``/``set_parameters`` services, so the node's checks still refuse bad values.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from h1_training.params import param, param_specs

DEFAULT_PORT = 8765  # the RoArm seed's ws://ROBOT_IP:8765

@dataclass
class GatewayConfig:
    """The foxglove_gateway node's parameters: the one declaration (see nodes/common.py)."""

    port: int = param(DEFAULT_PORT, "TCP port of the Foxglove WebSocket server (0 = any free port)", min=0,
                      max=65535, read_only=True)
    address: str = param("127.0.0.1", "address the server binds: 127.0.0.1 in sim; the robot's LAN address (or "
                         "0.0.0.0) on the robot, a deliberate choice since it exposes services and parameters",
                         read_only=True)
    fallback_to_free_port: bool = param(False, "when the port is taken, listen on a free one (and say which) "
                                        "instead of failing: for sim stacks that may run side by side; on the "
                                        "robot, fail loudly", read_only=True)
    camera_rate_hz: float = param(10.0, "images forwarded per second per camera (the cameras run at 30)",
                                  min=0.1, max=60.0)
    discovery_period_s: float = param(2.0, "how often the ROS graph is scanned for new topics and services [s]",
                                      min=0.1, max=60.0)
    service_timeout_s: float = param(10.0, "how long a forwarded service or parameter call may take [s]",
                                     min=0.1, max=600.0)
    time_period_s: float = param(0.1, "how often the server time is broadcast [s]", min=0.01, max=10.0)
    service_prefixes: list[str] = param(["/hil_session/", "/episode_recorder/", "/training_workflow/",
                                         "/model_comparison/", "/lerobot/", "/playback/", "/dataset_manager/"],
                                        "ROS services under these prefixes are offered to Foxglove clients")


GATEWAY_PARAMS = param_specs(GatewayConfig)  # derived from the declaration (tests, README table)

IMAGE_TYPES = frozenset({"sensor_msgs/msg/CompressedImage"})
IMAGE_SCHEMA = "foxglove.CompressedImage"
SKIPPED_TOPICS = frozenset({"/parameter_events"})  # parameters have their own Foxglove capability
# services every rclcpp/rclpy node creates for its parameters and type descriptions: parameters are
# exposed as parameters, not as services
_NODE_SERVICE_SUFFIXES = ("/describe_parameters", "/get_parameter_types", "/get_parameters", "/list_parameters",
                          "/set_parameters", "/set_parameters_atomically", "/get_type_description")


class ChannelKind(enum.Enum):
    IMAGE = "image"  # foxglove.CompressedImage, protobuf
    JSON = "json"  # the ROS message as JSON with its JSON schema


@dataclass(frozen=True)
class TopicRoute:
    topic: str
    ros_type: str  # pkg/msg/Name
    kind: ChannelKind
    schema_name: str
    max_rate_hz: float  # 0 = every message

    @property
    def encoding(self) -> str:
        return "protobuf" if self.kind is ChannelKind.IMAGE else "json"


@dataclass(frozen=True)
class ServiceRoute:
    service: str
    ros_type: str  # pkg/srv/Name


def route_topic(topic: str, ros_types: Sequence[str], camera_rate_hz: float) -> TopicRoute | None:
    """The channel for a ROS topic, or None when it is not forwarded (no single type, or skipped)."""
    if topic in SKIPPED_TOPICS or len(ros_types) != 1:
        return None
    ros_type = ros_types[0]
    if ros_type in IMAGE_TYPES:
        return TopicRoute(topic, ros_type, ChannelKind.IMAGE, IMAGE_SCHEMA, camera_rate_hz)
    return TopicRoute(topic, ros_type, ChannelKind.JSON, ros_type, 0.0)


def route_service(service: str, ros_types: Sequence[str], prefixes: Iterable[str]) -> ServiceRoute | None:
    if len(ros_types) != 1 or service.endswith(_NODE_SERVICE_SUFFIXES):
        return None
    if not any(service.startswith(p) for p in prefixes):
        return None
    return ServiceRoute(service, ros_types[0])


def choose_qos(reliable: Sequence[bool], transient_local: Sequence[bool]) -> str:
    """QoS for the gateway's subscription from the publishers' offers (as foxglove_bridge decides).

    ``latched`` when every publisher is transient-local (status topics: a late Foxglove client sees the last
    value), ``sensor`` when any publisher is best-effort (a reliable reader would match none of them),
    ``reliable`` otherwise.
    """
    if reliable and not all(reliable):
        return "sensor"
    if transient_local and all(transient_local):
        return "latched"
    return "reliable"


class Throttle:
    """At most ``rate_hz`` messages per second (0 = no limit), on a clock the caller passes in seconds."""

    def __init__(self, rate_hz: float) -> None:
        if rate_hz < 0 or not math.isfinite(rate_hz):
            raise ValueError(f"rate must be >= 0 and finite, got {rate_hz}")
        self.rate_hz = rate_hz
        self._next = -math.inf

    def allow(self, now_s: float) -> bool:
        if self.rate_hz <= 0:
            return True
        if now_s < self._next:
            return False
        period = 1.0 / self.rate_hz
        # keep a steady cadence, but never build up a burst after a gap
        self._next = max(self._next + period, now_s + period * 0.5)
        return True


# --- parameters -------------------------------------------------------------------------------------------------


def parameter_name(node: str, param: str) -> str:
    """Foxglove name of a node's parameter: ``/<node>.<param>`` (foxglove_bridge's convention)."""
    return f"/{node.lstrip('/')}.{param}"


def split_parameter_name(name: str) -> tuple[str, str]:
    """``/training_workflow_manager.workflow.min_episodes_before_training`` ->
    (``/training_workflow_manager``, ``workflow.min_episodes_before_training``). Node names hold no dots."""
    node, sep, param = name.partition(".")
    if not sep or not param or not node.startswith("/") or len(node) < 2:
        raise ValueError(f"parameter name {name!r} is not '/<node>.<parameter>'")
    return node, param


# rcl_interfaces/msg/ParameterType constants and the ParameterValue field that carries each
PARAMETER_FIELDS = {
    1: "bool_value",
    2: "integer_value",
    3: "double_value",
    4: "string_value",
    5: "byte_array_value",
    6: "bool_array_value",
    7: "integer_array_value",
    8: "double_array_value",
    9: "string_array_value",
}
PARAMETER_NOT_SET = 0
DOUBLE, DOUBLE_ARRAY, BYTE_ARRAY = 3, 8, 5


def ros_parameter_to_native(value: Any) -> Any:
    """A rcl_interfaces/msg/ParameterValue as a Python value (None when not set)."""
    field = PARAMETER_FIELDS.get(int(value.type))
    if field is None:
        return None
    native = getattr(value, field)
    if int(value.type) == BYTE_ARRAY:
        return bytes(b[0] if isinstance(b, bytes) else b for b in native)
    if int(value.type) >= 6:
        return list(native)
    return native


def _native_type_code(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 2
    if isinstance(value, float):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, (bytes, bytearray)):
        return 5
    if isinstance(value, list):
        if all(isinstance(v, bool) for v in value) and value:
            return 6
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value) and value:
            return 7
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value:
            return 8
        if all(isinstance(v, str) for v in value):
            return 9
    raise ValueError(f"unsupported parameter value {value!r}")


def native_to_ros_parameter(value: Any, current_type: int) -> tuple[int, str, Any]:
    """(type code, ParameterValue field, value) for setting ``value`` on a parameter now of ``current_type``.

    JSON has one number type, so an integer sent for a double parameter (``50`` for ``50.0``) becomes a double,
    as ``ros2 param set`` does with YAML; an empty list takes the parameter's array type. Other mismatches are
    passed on as they are, for the node to refuse with its own reason.
    """
    if value is None:
        raise ValueError("a parameter cannot be set to null")
    if current_type == DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return DOUBLE, PARAMETER_FIELDS[DOUBLE], float(value)
    if isinstance(value, list) and not value and current_type in (6, 7, 8, 9):
        return current_type, PARAMETER_FIELDS[current_type], []
    code = _native_type_code(value)
    if code == 7 and current_type == DOUBLE_ARRAY:
        code = DOUBLE_ARRAY
    if code == DOUBLE_ARRAY:
        value = [float(v) for v in value]
    return code, PARAMETER_FIELDS[code], value
