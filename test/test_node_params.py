"""Parameters the way operators type them: `-p rate_hz:=40` and `ros2 param set ... stale_after_s 1` give
integers for float parameters; the node must take them as the floats they mean (rclpy alone refuses them)."""

from __future__ import annotations

from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters


def _get(probe, node: str, name: str):
    reply = probe.call(GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=[name]))
    return reply.values[0]


def test_integer_values_for_float_parameters_are_taken_as_floats(procs, probe, tmp_path):
    procs.start_executable("episode_recorder", "episode_recorder",
                           ["--ros-args", "-p", f"save_dir:={tmp_path}", "-p", "rate_hz:=40"])
    probe.wait_for_service("/episode_recorder/get_parameters", timeout=60)

    value = _get(probe, "episode_recorder", "rate_hz")
    assert value.type == ParameterType.PARAMETER_DOUBLE and value.double_value == 40.0

    result = probe.set_parameter("episode_recorder", "stale_after_s", 1)
    assert result.successful, result.reason
    value = _get(probe, "episode_recorder", "stale_after_s")
    assert value.type == ParameterType.PARAMETER_DOUBLE and value.double_value == 1.0

    # the coercion does not bypass the range check, and a string is still refused with a reason
    result = probe.set_parameter("episode_recorder", "stale_after_s", 100000)
    assert not result.successful and "stale_after_s" in result.reason
    result = probe.set_parameter("episode_recorder", "stale_after_s", "fast")
    assert not result.successful and result.reason
    assert _get(probe, "episode_recorder", "stale_after_s").double_value == 1.0
