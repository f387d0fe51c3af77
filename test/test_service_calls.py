"""The one blocking service call (``nodes.common.call_service``) over real DDS: a lost reply is asked again
for requests that are safe to repeat, and a call that gets no reply says so within its timeout."""

from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from h1_training.nodes.common import ServiceCallError, call_service

FIRST_REPLY_LATE_S = 4.0  # the server answers its first request only after the caller's whole timeout


class FirstReplyLate:
    """A Trigger server (own context, two threads) that sits on its first request past the caller's timeout
    and answers every later one at once: to the caller, the first reply is lost."""

    def __init__(self, name: str) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(f"first_reply_late_{id(self)}", context=self.context)
        self.calls = 0
        self._lock = threading.Lock()
        self.node.create_service(Trigger, name, self._serve, callback_group=ReentrantCallbackGroup())
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _serve(self, _request, response):
        with self._lock:
            self.calls += 1
            call = self.calls
        if call == 1:
            time.sleep(FIRST_REPLY_LATE_S)
        response.success, response.message = True, f"call {call}"
        return response

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def late_server(probe):
    name = f"/first_reply_late_{time.monotonic_ns()}"
    server = FirstReplyLate(name)
    probe.wait_for_service(name)
    yield name, server
    server.close()


def test_a_lost_reply_is_asked_again_when_the_request_is_safe_to_repeat(probe, late_server):
    name, server = late_server
    client = probe.node.create_client(Trigger, name)
    try:
        start = time.monotonic()
        reply = call_service(client, Trigger.Request(), 3.0, "arm HOLD", resend_after_s=0.5)
        took = time.monotonic() - start
    finally:
        probe.node.destroy_client(client)
    assert reply.success and reply.message == "call 2"  # the second copy answered; the first was still held
    assert took < 3.0  # within the call's one timeout, not a second one
    assert server.calls == 2


def test_without_a_resend_a_lost_reply_fails_naming_what_and_the_timeout(probe, late_server):
    name, server = late_server
    client = probe.node.create_client(Trigger, name)
    try:
        with pytest.raises(ServiceCallError, match=rf"arm TRACK: no reply from {name} within 1 s$"):
            call_service(client, Trigger.Request(), 1.0, "arm TRACK")
    finally:
        probe.node.destroy_client(client)
    assert server.calls == 1  # sent once: TRACK is never repeated
