"""foxglove_gateway: Foxglove Studio's WebSocket server (foxglove-sdk, subprotocol ``foxglove.sdk.v1``) on ROS.

    ros2 run h1_training foxglove_gateway                                   # ws://127.0.0.1:8765
    ros2 run h1_training foxglove_gateway --ros-args -p address:=192.168.123.164 -p camera_rate_hz:=5.0

Then in Foxglove: Open connection -> Foxglove WebSocket -> ``ws://127.0.0.1:8765``. What is mapped to what (topics,
services, parameters, encodings) is decided in ``h1_training.foxglove.mapping``; this node only adapts it:

- the graph is scanned every ``discovery_period_s``; new topics are advertised as channels, new services under
  ``service_prefixes`` as Foxglove services; gone ones are withdrawn;
- a ROS subscription exists only while at least one client subscribes to its channel (QoS chosen from the
  publishers' offers), so an idle gateway takes nothing off DDS and serialises nothing;
- service calls and parameter gets/sets arrive on the SDK's threads and block there on the ROS reply (at most
  ``service_timeout_s``); the executor thread completes them;
- parameter changes seen on ``/parameter_events`` are pushed to clients that subscribed to them;
- the node clock is broadcast as server time (``use_sim_time`` works).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import foxglove
from foxglove import Channel, Context, Parameter, ParameterType, Service, ServiceSchema
from foxglove.channels import CompressedImageChannel
from foxglove.messages import CompressedImage, Timestamp
from foxglove.websocket import Capability, ChannelView, Client, ServerListener, StatusLevel
from rcl_interfaces.msg import Parameter as RosParameter
from rcl_interfaces.msg import ParameterEvent, ParameterValue
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from h1_training.foxglove import rosjson
from h1_training.foxglove.mapping import (
    PARAMETER_FIELDS,
    ChannelKind,
    GatewayConfig,
    Throttle,
    TopicRoute,
    choose_qos,
    native_to_ros_parameter,
    parameter_name,
    ros_parameter_to_native,
    route_service,
    route_topic,
    split_parameter_name,
)
from h1_training.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    ParamsMixin,
    call_service,
    create_destroyable_subscription,
    run_node,
)

_QOS = {"sensor": SENSOR_QOS, "latched": LATCHED_QOS, "reliable": COMMAND_QOS}


@dataclass
class _Forward:
    route: TopicRoute
    msg_type: Any
    channel: Any
    throttle: Throttle
    clients: int = 0
    subscription: Any = None
    qos: str | None = None
    forwarded: int = 0


@dataclass
class _ForwardedService:
    route: Any
    srv_type: Any
    client: Any


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    result: Any = None


def _foxglove_parameter(name: str, value: Any) -> Parameter:
    if isinstance(value, float):
        return Parameter(name, value=value, type=ParameterType.Float64)
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return Parameter(name, value=value, type=ParameterType.Float64Array)
    if isinstance(value, (bytes, bytearray)):
        return Parameter(name, value=bytes(value), type=ParameterType.ByteArray)
    return Parameter(name, value=value)


class _Listener(ServerListener):
    """The SDK's callbacks (its threads), handed to the node."""

    def __init__(self, node: FoxgloveGatewayNode) -> None:
        self.node = node

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        self.node.client_subscribed(channel.topic, +1)

    def on_unsubscribe(self, client: Client, channel: ChannelView) -> None:
        self.node.client_subscribed(channel.topic, -1)

    def on_get_parameters(self, client: Client, param_names: list[str],
                          request_id: str | None = None) -> list[Parameter]:
        return self.node.get_parameters_for(param_names)

    def on_set_parameters(self, client: Client, parameters: list[Parameter],
                          request_id: str | None = None) -> list[Parameter]:
        return self.node.set_parameters_for(parameters)

    def on_parameters_subscribe(self, param_names: list[str]) -> None:
        self.node.watch_parameters(param_names, True)

    def on_parameters_unsubscribe(self, param_names: list[str]) -> None:
        self.node.watch_parameters(param_names, False)


class FoxgloveGatewayNode(ParamsMixin, Node):
    PARAMS = GatewayConfig

    def __init__(self) -> None:
        super().__init__("foxglove_gateway")
        p = self.declare_specs()
        self._lock = threading.RLock()
        self._forwards: dict[str, _Forward] = {}
        self._fwd_services: dict[str, _ForwardedService] = {}
        self._param_clients: dict[tuple[str, str], Any] = {}
        self._watched: set[str] = set()
        self._bad_types: set[str] = set()
        self._group = ReentrantCallbackGroup()
        self._fox_context = Context()
        try:
            self.server = self._start_server(p["port"])
        except RuntimeError as exc:
            if not (p["fallback_to_free_port"] and "bind" in str(exc).lower()):
                raise RuntimeError(f"cannot listen on {p['address']}:{p['port']}: {exc}") from exc
            self.get_logger().warning(f"port {p['port']} is taken ({exc}); listening on a free port instead")
            self.server = self._start_server(0)
        self.url = f"ws://{p['address']}:{self.server.port}"
        # a client's (un)subscription arrives on an SDK thread; the ROS side is changed on the executor
        self._reconcile_gc = self.create_guard_condition(self._reconcile)
        self.create_subscription(ParameterEvent, "/parameter_events", self._on_parameter_event, 100,
                                 callback_group=self._group)
        self._discovery_timer = self.create_timer(p["discovery_period_s"], self._discover)
        self._time_timer = self.create_timer(p["time_period_s"], self._broadcast_time)
        self._discover()
        self.get_logger().info(f"Foxglove WebSocket server (foxglove.sdk.v1) on {self.url}")
        print(f"foxglove_gateway: listening on {self.url}", flush=True)

    def _start_server(self, port: int) -> Any:
        return foxglove.start_server(
            name="h1_training",
            host=self.p["address"],
            port=port,
            capabilities=[Capability.Services, Capability.Parameters, Capability.Time],
            server_listener=_Listener(self),
            supported_encodings=["json"],
            context=self._fox_context,
        )

    # --- topics ---------------------------------------------------------------------------------------------------

    def _discover(self) -> None:
        p = self.p
        names = {name: types for name, types in self.get_topic_names_and_types()}
        with self._lock:
            for topic, types in names.items():
                if topic in self._forwards or topic in self._bad_types:
                    continue
                route = route_topic(topic, types, p["camera_rate_hz"])
                if route is None:
                    continue
                try:
                    msg_type = rosjson.import_type(route.ros_type)
                    channel = self._make_channel(route, msg_type)
                except (ImportError, ValueError) as exc:
                    self._bad_types.add(topic)
                    self.get_logger().warning(f"not forwarding {topic} ({route.ros_type}): {exc}")
                    continue
                self._forwards[topic] = _Forward(route, msg_type, channel, Throttle(route.max_rate_hz))
            for topic in [t for t, f in self._forwards.items() if t not in names and f.clients == 0]:
                self._forwards.pop(topic).channel.close()
        self._discover_services(p["service_prefixes"])
        self._reconcile()

    def _make_channel(self, route: TopicRoute, msg_type: Any) -> Any:
        if route.kind is ChannelKind.IMAGE:
            return CompressedImageChannel(route.topic, context=self._fox_context)
        schema = rosjson.message_schema(msg_type)
        return Channel(route.topic, message_encoding="json", context=self._fox_context,
                       schema=foxglove.Schema(name=route.schema_name, encoding="jsonschema",
                                              data=json.dumps(schema).encode()))

    def client_subscribed(self, topic: str, delta: int) -> None:
        with self._lock:
            fwd = self._forwards.get(topic)
            if fwd is not None:
                fwd.clients = max(0, fwd.clients + delta)
        self._reconcile_gc.trigger()

    def _reconcile(self) -> None:
        """ROS subscriptions for the channels clients want, with the QoS the current publishers offer.

        Runs on a client's (un)subscription and after every graph scan: a topic seen only through its subscribers
        gets its ROS subscription when a publisher appears, and one whose publishers changed QoS (a best-effort
        publisher joining, say) is subscribed again so that it still matches."""
        with self._lock:
            for topic, fwd in self._forwards.items():
                qos = self._qos_for(topic) if fwd.clients > 0 else None
                if fwd.subscription is not None and qos != fwd.qos:
                    self.destroy_subscription(fwd.subscription)
                    fwd.subscription, fwd.qos = None, None
                    if qos is None:
                        self.get_logger().info(f"stopped forwarding {topic}")
                if qos is not None and fwd.subscription is None:
                    # images arrive serialised and are decoded only when the rate limit lets one through (the
                    # cameras publish 30 Hz of 40-60 kB frames; Studio gets camera_rate_hz of them)
                    fwd.subscription = create_destroyable_subscription(
                        self, fwd.msg_type, topic, self._make_callback(fwd), _QOS[qos], callback_group=self._group,
                        raw=fwd.route.kind is ChannelKind.IMAGE)
                    fwd.qos = qos
                    self.get_logger().info(f"forwarding {topic} ({qos} QoS)")

    def _qos_for(self, topic: str) -> str | None:
        infos = self.get_publishers_info_by_topic(topic)
        if not infos:
            return None  # subscribe once someone publishes: the QoS depends on the publisher
        return choose_qos([i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos],
                          [i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos])

    def _make_callback(self, fwd: _Forward) -> Callable[[Any], None]:
        if fwd.route.kind is ChannelKind.IMAGE:
            def on_image(raw: bytes) -> None:
                if not fwd.throttle.allow(time.monotonic()):
                    return
                msg = deserialize_message(raw, fwd.msg_type)
                stamp = msg.header.stamp
                fwd.channel.log(CompressedImage(timestamp=Timestamp(stamp.sec, stamp.nanosec),
                                                frame_id=msg.header.frame_id, data=bytes(msg.data),
                                                format=msg.format),
                                log_time=self.get_clock().now().nanoseconds)
                fwd.forwarded += 1
            return on_image

        def on_message(msg: Any) -> None:
            payload = json.dumps(rosjson.message_to_dict(msg), allow_nan=False, separators=(",", ":"))
            fwd.channel.log(payload.encode(), log_time=self.get_clock().now().nanoseconds)
            fwd.forwarded += 1
        return on_message

    def _broadcast_time(self) -> None:
        self.server.broadcast_time(self.get_clock().now().nanoseconds)

    # --- services -------------------------------------------------------------------------------------------------

    def _discover_services(self, prefixes: list[str]) -> None:
        found = {}
        for name, types in self.get_service_names_and_types():
            route = route_service(name, types, prefixes)
            if route is not None:
                found[name] = route
        added = []
        with self._lock:
            for name, route in found.items():
                if name in self._fwd_services or name in self._bad_types:
                    continue
                try:
                    srv_type = rosjson.import_type(route.ros_type, "srv")
                    schema = self._service_schema(route.ros_type, srv_type)
                except (ImportError, ValueError) as exc:
                    self._bad_types.add(name)
                    self.get_logger().warning(f"not forwarding service {name} ({route.ros_type}): {exc}")
                    continue
                client = self.create_client(srv_type, name, callback_group=self._group)
                self._fwd_services[name] = _ForwardedService(route, srv_type, client)
                added.append(Service(name, schema=schema, handler=self._make_service_handler(name)))
            gone = [n for n in self._fwd_services if n not in found]
            for name in gone:
                self.destroy_client(self._fwd_services.pop(name).client)
        if added:
            self.server.add_services(added)
        if gone:
            self.server.remove_services(gone)

    @staticmethod
    def _service_schema(ros_type: str, srv_type: Any) -> ServiceSchema:
        def part(cls: Any, suffix: str) -> foxglove.MessageSchema:
            data = json.dumps(rosjson.message_schema(cls)).encode()
            return foxglove.MessageSchema(encoding="json", schema=foxglove.Schema(
                name=f"{ros_type}_{suffix}", encoding="jsonschema", data=data))
        return ServiceSchema(ros_type, request=part(srv_type.Request, "Request"),
                             response=part(srv_type.Response, "Response"))

    def _make_service_handler(self, name: str) -> Callable[[Any], bytes]:
        def handler(request: Any) -> bytes:
            with self._lock:
                svc = self._fwd_services.get(name)
            if svc is None:
                raise RuntimeError(f"service {name} is gone")
            text = bytes(request.payload).decode() if request.payload else ""
            try:
                data = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}: request is not JSON ({exc})") from exc
            ros_request = rosjson.fill_message(svc.srv_type.Request(), data)
            if not svc.client.service_is_ready():
                raise RuntimeError(f"{name}: no ROS server answers (is its node running?)")
            reply = call_service(svc.client, ros_request, self.p["service_timeout_s"], name)
            return json.dumps(rosjson.message_to_dict(reply), allow_nan=False).encode()
        return handler

    # --- parameters -----------------------------------------------------------------------------------------------

    def _param_call(self, node: str, srv_type: Any, suffix: str, request: Any) -> Any:
        key = (node, suffix)
        with self._lock:
            client = self._param_clients.get(key)
            if client is None:
                client = self.create_client(srv_type, f"{node}{suffix}", callback_group=self._group)
                self._param_clients[key] = client
        if not client.wait_for_service(timeout_sec=min(2.0, self.p["service_timeout_s"])):
            raise TimeoutError(f"{node}{suffix} is not available")
        return call_service(client, request, self.p["service_timeout_s"], f"{node}{suffix}")

    def _node_names(self) -> list[str]:
        return sorted(f"{ns.rstrip('/')}/{name}" for name, ns in self.get_node_names_and_namespaces()
                      if not name.startswith("_"))

    def _get_node_params(self, node: str, names: list[str] | None) -> dict[str, ParameterValue]:
        if names is None:
            listed = self._param_call(node, ListParameters, "/list_parameters", ListParameters.Request())
            names = list(listed.result.names)
        if not names:
            return {}
        reply = self._param_call(node, GetParameters, "/get_parameters", GetParameters.Request(names=names))
        return dict(zip(names, reply.values, strict=False))

    def get_parameters_for(self, param_names: list[str]) -> list[Parameter]:
        wanted: dict[str, list[str] | None] = {}
        if not param_names:
            wanted = {node: None for node in self._node_names()}
        else:
            grouped: dict[str, list[str]] = defaultdict(list)
            for full in param_names:
                try:
                    node, param = split_parameter_name(full)
                except ValueError as exc:
                    self.server.publish_status(str(exc), StatusLevel.Warning)
                    continue
                grouped[node].append(param)
            wanted = dict(grouped)
        out = []
        for node, names in wanted.items():
            try:
                values = self._get_node_params(node, names)
            except (TimeoutError, RuntimeError) as exc:
                if param_names:  # asked for by name: say why it is missing; a full listing skips silent nodes
                    self.server.publish_status(f"parameters of {node}: {exc}", StatusLevel.Warning)
                continue
            for param, value in values.items():
                native = ros_parameter_to_native(value)
                if native is not None:
                    out.append(_foxglove_parameter(parameter_name(node, param), native))
        return out

    def set_parameters_for(self, parameters: list[Parameter]) -> list[Parameter]:
        grouped: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for prm in parameters:
            try:
                node, param = split_parameter_name(prm.name)
            except ValueError as exc:
                self.server.publish_status(str(exc), StatusLevel.Error)
                continue
            grouped[node].append((param, prm.get_value()))
        for node, items in grouped.items():
            try:
                current = self._get_node_params(node, [n for n, _ in items])
                request = SetParameters.Request()
                for param, value in items:
                    now = current.get(param)
                    code, field_name, converted = native_to_ros_parameter(value, int(now.type) if now else 0)
                    pv = ParameterValue(type=code)
                    setattr(pv, field_name, converted)
                    request.parameters.append(RosParameter(name=param, value=pv))
                reply = self._param_call(node, SetParameters, "/set_parameters", request)
                for (param, value), result in zip(items, reply.results, strict=False):
                    if not result.successful:
                        self.server.publish_status(
                            f"{parameter_name(node, param)} = {value!r} refused: {result.reason}", StatusLevel.Error)
            except (TimeoutError, RuntimeError, ValueError, TypeError) as exc:
                self.server.publish_status(f"setting parameters of {node}: {exc}", StatusLevel.Error)
        # answer with the values the nodes hold now (a refused change shows the old value)
        return self.get_parameters_for([prm.name for prm in parameters])

    def watch_parameters(self, names: list[str], on: bool) -> None:
        with self._lock:
            if on:
                self._watched.update(names)
            else:
                self._watched.difference_update(names)

    def _on_parameter_event(self, event: ParameterEvent) -> None:
        with self._lock:
            if not self._watched:
                return
            watched = set(self._watched)
        changed = []
        for prm in list(event.new_parameters) + list(event.changed_parameters):
            name = parameter_name(event.node, prm.name)
            if name in watched and int(prm.value.type) in PARAMETER_FIELDS:
                changed.append(_foxglove_parameter(name, ros_parameter_to_native(prm.value)))
        if changed:
            self.server.publish_parameter_values(changed)

    def close(self) -> None:
        self.server.stop()


def main(args: list[str] | None = None) -> None:
    run_node(FoxgloveGatewayNode, args, threads=4)


if __name__ == "__main__":
    main()
