"""A small rclpy helper node for tests, benchmarks and the CLI: graph-based waits, topic capture,
service calls and parameter sets with timeouts. Spins in its own thread; call ``close()`` when done.

Message and service types may be given as classes or by their ROS names (``"sensor_msgs/msg/JointState"``,
``"std_srvs/srv/Trigger"``), and requests as dicts of fields: code outside ``nodes/`` (the benches) then talks
ROS through the probe without importing any ROS package itself (the import contract in pyproject.toml).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

from h1_training.nodes.common import ServiceCallError, call_service
from h1_training.procs import wait_until


class RosProbe:
    def __init__(self, name: str = "h1_probe") -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                if self._stop:
                    return
                raise

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> RosProbe:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- graph ---------------------------------------------------------------------------------------
    def node_names(self) -> list[str]:
        return [n for n, _ in self.node.get_node_names_and_namespaces()]

    def wait_for_node(self, name: str, timeout: float = 20.0) -> None:
        wait_until(lambda: name.lstrip("/") in self.node_names(), timeout, f"node {name}")

    def wait_for_service(self, name: str, timeout: float = 20.0) -> None:
        names = lambda: [n for n, _ in self.node.get_service_names_and_types()]  # noqa: E731
        wait_until(lambda: name in names(), timeout, f"service {name}")

    def wait_for_publisher(self, topic: str, timeout: float = 20.0) -> None:
        wait_until(lambda: self.node.count_publishers(topic) > 0, timeout, f"a publisher on {topic}")

    # --- topics --------------------------------------------------------------------------------------
    def capture(self, msg_type: Any, topic: str, qos: QoSProfile | int = 10, keep: int = 10000) -> Capture:
        cap = Capture(keep)
        cap.subscription = self.node.create_subscription(ros_type(msg_type), topic, cap.add, qos)
        return cap

    def publisher(self, msg_type: Any, topic: str, qos: QoSProfile | int = 10):
        return self.node.create_publisher(ros_type(msg_type), topic, qos)

    # --- services & parameters -----------------------------------------------------------------------
    def call(self, srv_type: Any, name: str, request: Any = None, timeout: float = 10.0) -> Any:
        """The reply of service ``name``; ``request``: a Request, a dict of its fields, or None (defaults)."""
        srv_type = ros_type(srv_type)
        if isinstance(request, dict):
            fields = request
            request = srv_type.Request()
            for key, value in fields.items():
                setattr(request, key, value)
        client = self.node.create_client(srv_type, name)
        try:
            return call_service(client, request if request is not None else srv_type.Request(), timeout)
        except ServiceCallError as exc:
            raise TimeoutError(str(exc)) from exc
        finally:
            self.node.destroy_client(client)

    def set_parameter(self, node: str, name: str, value: Any, timeout: float = 10.0):
        """What `ros2 param set` does: rcl_interfaces/srv/SetParameters on <node>/set_parameters."""
        req = SetParameters.Request()
        req.parameters = [Parameter(name=name, value=to_parameter_value(value))]
        reply = self.call(SetParameters, f"/{node.lstrip('/')}/set_parameters", req, timeout)
        return reply.results[0]


def ros_type(spec: Any) -> Any:
    """A message/service class from its ROS name (``"pkg/msg/Name"``, ``"pkg/srv/Name"``); a class as it is."""
    if not isinstance(spec, str):
        return spec
    package, sep, rest = spec.partition("/")
    kind, sep2, name = rest.partition("/")
    if not (sep and sep2 and kind in ("msg", "srv") and name):
        raise ValueError(f"expected 'package/msg/Name' or 'package/srv/Name', got {spec!r}")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def to_parameter_value(value: Any) -> ParameterValue:
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    raise TypeError(f"unsupported parameter value {value!r}")


class Capture:
    """Messages received on a topic, with receive times (monotonic seconds)."""

    def __init__(self, keep: int) -> None:
        self.messages: deque = deque(maxlen=keep)
        self.times: deque = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.subscription = None

    def add(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)
            self.times.append(time.monotonic())

    def __len__(self) -> int:
        return len(self.messages)

    def last(self) -> Any:
        with self._lock:
            return self.messages[-1] if self.messages else None

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.times.clear()

    def wait(self, count: int = 1, timeout: float = 10.0, where: Callable[[Any], bool] | None = None) -> Any:
        """Wait until ``count`` messages (matching ``where``) have arrived; return the last match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                matches = [m for m in self.messages if where is None or where(m)]
            if len(matches) >= count:
                return matches[-1]
            time.sleep(0.02)
        raise TimeoutError(f"got {len(matches)} of {count} expected messages in {timeout:.1f}s")
