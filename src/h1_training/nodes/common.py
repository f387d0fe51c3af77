"""Shared rclpy glue for every node: QoS profiles, parameters declared from config dataclasses, polled
subscriptions, main().

Parameters: declare them ONCE, on a config dataclass, never as a separate list
------------------------------------------------------------------------------
A node's parameters are the ``param(...)`` fields of one config dataclass (``h1_training.params``: type from the
annotation and default, description, ``min``/``max`` or ``choices``, ``read_only``). Put the dataclass where its
logic lives (plain module, no rclpy) when the logic takes it; a node-only one may sit in the node file. Fields
of the logic's own config join in with ``nested(LogicConfig)`` (same names, flattened)::

    # h1_training/workflow/manager.py (plain Python)
    @dataclass
    class WorkflowConfig:
        poll_period_s: float = param(2.0, "how often the server's /training_status is asked [s]",
                                     min=0.1, max=60.0)
        gate: str = param("auto", "when a trained model goes live", choices=("auto", "manual"))
        server_url: str = param("http://127.0.0.1:8000", "the policy server", read_only=True)

    # h1_training/nodes/training_workflow_manager_node.py
    @dataclass
    class WorkflowNodeParams:
        status_rate_hz: float = param(1.0, "status publish rate [Hz]", min=0.1, max=50.0)
        workflow: WorkflowConfig = nested(WorkflowConfig)

    class WorkflowManagerNode(ParamsMixin, Node):
        PARAMS = WorkflowNodeParams

        def __init__(self) -> None:
            super().__init__("training_workflow_manager")
            self.declare_specs()                 # declares every parameter with its descriptor (range, choices,
            cfg = self.config                    #   read-only); self.config: a WorkflowNodeParams of the values,
            self.manager = Manager(cfg.workflow) #   self.p: the same values as a dict by name

        def on_params_changed(self, changed: dict) -> None:  # after an accepted `ros2 param set`
            ...

What you get: ``ros2 param describe`` shows the description and range; ``ros2 param set`` with a value of the
wrong type, out of range, not among the choices, or refused by the dataclass's own ``__post_init__`` (cross-field
rules) fails with the reason and changes nothing; integers given for float parameters are taken as floats;
read-only ones refuse changes. The README's parameter tables are generated from the same declarations
(``python scripts/param_tables.py --write``; ``test/test_param_tables.py`` fails when README and code disagree):
a new node adds its executable to ``PARAM_TABLES`` in that script and a ``<!-- params:EXECUTABLE -->`` /
``<!-- /params:EXECUTABLE -->`` pair to the README.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidHandle
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from h1_training.params import ParamSpec, build, check_value, param_specs

# Streams (joint states, images): best effort, keep last few.
SENSOR_QOS = qos_profile_sensor_data
# Status topics: latched, so a late subscriber (Foxglove, `ros2 topic echo`) sees the last value at once.
LATCHED_QOS = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Commands: reliable, shallow.
COMMAND_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# The status keeps its last 10 messages for late subscribers (a console started mid-session sees the recent
# lines), and a reliable depth of 10 so that quick transitions (SAVING -> DECIDING) all reach the subscribers.
STATUS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


def create_destroyable_subscription(node: Node, *args: Any, **kwargs: Any) -> Any:
    """``node.create_subscription(*args, **kwargs)`` for a subscription that one callback of a
    MultiThreadedExecutor may destroy while the executor spins (the gateway's forwards, the web app's cameras):
    created without QoS event handlers.

    Why: rclpy (9.1 here) collects a subscription's event handlers into its wait set; one destroyed by another
    callback between collection and use raises InvalidHandle out of ``spin()`` (ros2/rclpy#1284; seen in CI: the
    Foxglove gateway exited at "stopped forwarding /camera/ego_cam/compressed"). The subscription handle itself is
    guarded by rclpy (a destroyed one is skipped). What is lost: rclpy's default "offering incompatible QoS" log
    line, which these subscriptions do not need: they take the QoS the current publishers offer."""
    return node.create_subscription(*args, event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
                                    **kwargs)


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.kind is float and (spec.min is not None or spec.max is not None):
        desc.floating_point_range = [
            FloatingPointRange(
                from_value=float(spec.min if spec.min is not None else -sys.float_info.max),
                to_value=float(spec.max if spec.max is not None else sys.float_info.max),
                step=0.0,
            )
        ]
    elif spec.kind is int and (spec.min is not None or spec.max is not None):
        desc.integer_range = [
            IntegerRange(
                from_value=int(spec.min if spec.min is not None else -(2**63)),
                to_value=int(spec.max if spec.max is not None else 2**63 - 1),
                step=0,
            )
        ]
    return desc


def _coerce(spec: ParamSpec, value: Any) -> Any:
    # ROS hands YAML "1" for a float parameter as int; accept it as the float the spec means.
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_parameter(spec: ParamSpec, param: Parameter) -> Parameter:
    if spec.kind is float and param.type_ == Parameter.Type.INTEGER:
        return Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
    return param


class ParamsMixin:
    """``PARAMS``: the node's config dataclass (module docstring). ``declare_specs()`` declares its parameters;
    values land in ``self.p`` (a dict) and ``self.config`` (the dataclass) and stay in sync on ``ros2 param set``.

    Subclasses may override ``on_params_changed(changed: dict)`` for side effects (post-set).
    """

    PARAMS: type | None = None

    def declare_specs(self: Any) -> dict[str, Any]:
        specs = param_specs(self.PARAMS) if self.PARAMS is not None else []
        self._specs = {s.name: s for s in specs}
        self.p: dict[str, Any] = {}
        # `-p rate_hz:=50` or `ros2 param set ... 50` arrive as INTEGER; rclpy would refuse them for a DOUBLE
        # parameter ("Wrong parameter type"). Turn them into the float the operator meant, before rclpy's type
        # check: overrides (rclpy keeps them in _parameter_overrides until declare) and every later set.
        overrides = getattr(self, "_parameter_overrides", None)
        if isinstance(overrides, dict):
            for name, param in list(overrides.items()):
                if name in self._specs:
                    overrides[name] = _coerce_parameter(self._specs[name], param)
        self.add_pre_set_parameters_callback(self._coerce_params)
        for spec in specs:
            value = self.declare_parameter(spec.name, spec.default, descriptor_for(spec)).value
            value = _coerce(spec, value)
            reason = check_value(spec, value)
            if reason:
                raise ValueError(f"invalid parameter at start-up: {reason}")
            self.p[spec.name] = value
        self.config = self._build(self.p)
        self.add_on_set_parameters_callback(self._check_params)
        self.add_post_set_parameters_callback(self._apply_params)
        return self.p

    def _coerce_params(self, params: list[Parameter]) -> list[Parameter]:
        return [_coerce_parameter(self._specs[p.name], p) if p.name in self._specs else p for p in params]

    def _build(self: Any, values: dict[str, Any]) -> Any:
        if self.PARAMS is None:
            return None
        try:
            return build(self.PARAMS, values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid parameters at start-up: {exc}") from exc

    def _check_params(self, params: list) -> SetParametersResult:
        new = dict(self.p)
        for param in params:
            spec = self._specs.get(param.name)
            if spec is None:
                continue
            value = _coerce(spec, param.value)
            reason = check_value(spec, value)
            if reason:
                self.get_logger().warning(f"rejected parameter change: {reason}")
                return SetParametersResult(successful=False, reason=reason)
            new[param.name] = value
        if self.PARAMS is not None and new != self.p:
            try:  # the dataclass's own cross-field rules (__post_init__)
                build(self.PARAMS, new)
            except (TypeError, ValueError) as exc:
                reason = f"rejected: {exc}"
                self.get_logger().warning(f"rejected parameter change: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_params(self, params: list) -> None:
        changed = {}
        for param in params:
            spec = self._specs.get(param.name)
            if spec is not None:
                self.p[param.name] = _coerce(spec, param.value)
                changed[param.name] = self.p[param.name]
        if changed:
            if self.PARAMS is not None:
                self.config = build(self.PARAMS, self.p)
            self.on_params_changed(changed)

    def on_params_changed(self, changed: dict[str, Any]) -> None:  # pragma: no cover - default no-op
        pass


def log_at(node: Node, level: str, text: str) -> None:
    """The one severity logger: ``level`` "error", "warn" (or "warning"), anything else info. One call site
    per severity, because rclpy refuses a call site whose severity changes between calls."""
    logger = node.get_logger()
    if level == "error":
        logger.error(text)
    elif level in ("warn", "warning"):
        logger.warning(text)
    else:
        logger.info(text)


def apply_process_rt_priority(node: Node, priority: int, otherwise: str) -> bool:
    """A node's ``process_rt_priority`` parameter: its whole process SCHED_FIFO ``priority`` (0 = leave it), via
    ``scheduling.make_process_realtime``; where that is refused, a warning ending with ``otherwise`` (what the
    operator may see instead) and nothing changed. True when the process is real-time now."""
    if not priority:
        return False
    from h1_training.scheduling import make_process_realtime

    refused = make_process_realtime(priority)
    if refused:
        node.get_logger().warning(f"{refused}: {otherwise}")
        return False
    node.get_logger().info(f"process_rt_priority: every thread of this process at SCHED_FIFO {priority} (programs "
                           "started through procs.run, such as rsync, at normal priority)")
    return True


class ServiceCallError(RuntimeError):
    """A service call that got no reply: server missing, timed out, or failed (the message says which)."""


def call_service(client: Any, request: Any, timeout: float, what: str = "",
                 resend_after_s: float | None = None) -> Any:
    """The one blocking service call: wait up to ``timeout`` for the server, send ``request``, wait up to
    ``timeout`` for the reply (the pending request is dropped then) and return it. Call it from a thread other
    than the one spinning the node's executor (a MultiThreadedExecutor, or a reentrant callback group).
    Raises ServiceCallError naming ``what`` (default: the service).

    ``resend_after_s``: for requests that are safe to repeat (arm/set_mode), send the same request once more
    when no reply came by then, and take whichever reply comes first, within the same ``timeout``. A reply
    can be lost on DDS while the server has not yet matched the client's reply reader (seen in CI: the arm
    answered a HOLD in 0.23 s and the session waited its 5 s for nothing)."""
    what = what or client.srv_name
    if not client.wait_for_service(timeout_sec=timeout):
        raise ServiceCallError(f"{what}: service {client.srv_name} not available after {timeout:g} s")
    deadline = time.monotonic() + timeout
    done = threading.Event()
    futures = [client.call_async(request)]
    futures[0].add_done_callback(lambda _f: done.set())
    if resend_after_s is not None and 0 < resend_after_s < timeout and not done.wait(resend_after_s):
        futures.append(client.call_async(request))
        futures[-1].add_done_callback(lambda _f: done.set())
    answered = done.wait(max(0.0, deadline - time.monotonic()))
    for future in futures:
        if not future.done():
            client.remove_pending_request(future)
    if not answered:
        sent = f" (sent {len(futures)} times)" if len(futures) > 1 else ""
        raise ServiceCallError(f"{what}: no reply from {client.srv_name} within {timeout:g} s{sent}")
    future = next(f for f in futures if f.done())
    if future.exception() is not None:
        raise ServiceCallError(f"{what}: {future.exception()}")
    return future.result()


def run_node(factory: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> None:
    """The standard main(): init, spin, clean shutdown on Ctrl+C / SIGTERM (ros2/demos style)."""
    with rclpy.init(args=args):
        node = None
        try:
            node = factory()
            if threads > 1:
                executor = MultiThreadedExecutor(num_threads=threads)
                executor.add_node(node)
                executor.spin()
            else:
                rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except Exception:
            # rclpy can fail to take a message that arrives together with Ctrl+C/SIGTERM (pybind11 "Unable to
            # convert call argument"): spin raises although the node is simply stopping. Only then is it clean.
            if node is None or node.context.ok():
                raise
        finally:
            if node is not None:
                close = getattr(node, "close", None)
                if callable(close):
                    close()
                node.destroy_node()



def run_script_node(factory: Callable[[], Any], args: list[str] | None = None) -> int:
    """main() of a node that runs a script (``node.run() -> exit code``) while an executor thread serves its
    subscriptions and service replies (sim_operator, sim_ab_trials). Ctrl+C exits 130."""
    code = 1
    with rclpy.init(args=args):
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            code = node.run()
        except KeyboardInterrupt:
            code = 130
        finally:
            # stop the spinning thread before the node and context go away (else rclpy's C++ side aborts)
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            node.destroy_node()
    return code

# --- Polled subscriptions ---------------------------------------------------------------------------------
# Subscriptions that their node's own loop reads, instead of the executor calling back on every message.
#
# Why: rclpy's executor spends ~0.6 ms of Python per callback (it rebuilds its wait set on every wake-up;
# measured here on a 2-core machine: 150 JointState/s cost 9.6 % of a core). A node that only samples a fast
# stream at a lower rate of its own (camera_sim draws 30 frames/s from 100 Hz joint_states) takes the newest
# message from its loop instead. The subscription is an ordinary one on the graph (same topic, type and
# reliability), held back from the executor by a callback group that never runs.

class _NeverScheduled(CallbackGroup):
    """The executor leaves entities of this group out of its wait set: their owner takes messages itself."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        pass


class PolledSubscription:
    """``take_latest()`` returns the newest message received since the last call, or None.

    The reader keeps only the newest sample (KEEP_LAST 1: older ones are never looked at), so one take per
    poll deserializes one message whatever the publisher's rate.
    """

    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile) -> None:
        qos = copy.copy(qos)
        qos.history, qos.depth = HistoryPolicy.KEEP_LAST, 1
        self.msg_type = msg_type
        self.subscription = node.create_subscription(msg_type, topic, _unused_callback, qos,
                                                     callback_group=_NeverScheduled())

    def take_latest(self) -> Any | None:
        sub = self.subscription
        latest = None
        try:
            with sub.handle:
                while (taken := sub.handle.take_message(sub.msg_type, sub.raw)) is not None:
                    latest = taken[0]
        except InvalidHandle:  # destroyed while shutting down
            return None
        return latest


def _unused_callback(msg: Any) -> None:  # pragma: no cover - the executor never schedules these subscriptions
    pass
