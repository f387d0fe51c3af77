"""A subscription destroyed by one callback of a MultiThreadedExecutor while the executor builds its wait set.

The gateway forwards a topic only while a Foxglove client subscribes and the web app takes camera images only while
a page is open: both destroy subscriptions from callbacks while the executor's spin thread collects entities. rclpy
(ros2/rclpy#1284) then raises InvalidHandle out of ``spin()`` for the subscription's QoS event handlers; seen in
CI as the gateway exiting at "stopped forwarding /camera/ego_cam/compressed". The race is made deterministic here:
the executor destroys the subscription at the moment it has collected every entity and before it uses them.
"""

from __future__ import annotations

import threading

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from h1_training.nodes.common import create_destroyable_subscription  # noqa: E402


class _DestroyBetweenCollectAndUse(MultiThreadedExecutor):
    """Destroys ``victim`` when the spin thread asks about the node's guard condition: rclpy collects
    subscriptions, timers, clients, services and waitables first, then goes through the guards, then enters and
    adds everything to the wait set (executors.py ``_wait_for_ready_callbacks``)."""

    def __init__(self, context, node, guard) -> None:
        super().__init__(num_threads=2, context=context)
        self.node, self.guard, self.victim = node, guard, None

    def can_execute(self, entity) -> bool:
        if entity is self.guard and self.victim is not None:
            victim, self.victim = self.victim, None
            self.node.destroy_subscription(victim)  # what another callback thread did, at the worst moment
        return super().can_execute(entity)


def _spin_through_the_race(create) -> list[BaseException]:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=None)
    node = rclpy.create_node("race", context=context)
    guard = node.create_guard_condition(lambda: None)
    executor = _DestroyBetweenCollectAndUse(context, node, guard)
    executor.add_node(node)
    errors: list[BaseException] = []
    try:
        for _ in range(3):
            executor.victim = create(node)
            done = threading.Event()
            node.create_timer(0.01, done.set)  # wakes the executor: a wait set is built, the victim destroyed
            try:
                while not done.is_set():
                    executor.spin_once(timeout_sec=0.5)
                executor.spin_once(timeout_sec=0.05)  # the wait set after the destroy
            except Exception as exc:  # noqa: BLE001 - what spin() would raise out of the node's main()
                errors.append(exc)
                break
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return errors


def test_a_destroyable_subscription_survives_being_destroyed_while_the_executor_builds_its_wait_set():
    errors = _spin_through_the_race(
        lambda node: create_destroyable_subscription(node, String, "race_topic", lambda _m: None, 10))
    assert errors == []


def test_the_race_is_real_for_a_plain_subscription():
    # The control: the same moment with rclpy's default QoS event handlers breaks the spin (if a newer rclpy
    # fixes ros2/rclpy#1284 this fails, and create_destroyable_subscription can go).
    errors = _spin_through_the_race(lambda node: node.create_subscription(String, "race_topic", lambda _m: None, 10))
    assert errors and "destruction was requested" in str(errors[0]), errors
