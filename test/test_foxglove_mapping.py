"""The gateway's mapping (h1_training.foxglove, no rclpy): which channel and encoding each topic gets, which services
and parameters are exposed, ROS messages to and from JSON with their JSON schemas, the camera throttle."""

from __future__ import annotations

import json
import math

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterValue
from sensor_msgs.msg import JointState

from h1_training.foxglove import rosjson
from h1_training.foxglove.mapping import (
    GATEWAY_PARAMS,
    ChannelKind,
    Throttle,
    choose_qos,
    native_to_ros_parameter,
    parameter_name,
    ros_parameter_to_native,
    route_service,
    route_topic,
    split_parameter_name,
)
from h1_training_interfaces.srv import CompareModels, GetEpisodeInfo

PREFIXES = next(s.default for s in GATEWAY_PARAMS if s.name == "service_prefixes")


def test_topic_routes():
    cam = route_topic("/camera/ego_cam/compressed", ["sensor_msgs/msg/CompressedImage"], 10.0)
    assert cam and cam.kind is ChannelKind.IMAGE and cam.schema_name == "foxglove.CompressedImage"
    assert (cam.encoding, cam.max_rate_hz) == ("protobuf", 10.0)
    joints = route_topic("/joint_states", ["sensor_msgs/msg/JointState"], 10.0)
    assert joints and (joints.encoding, joints.schema_name, joints.max_rate_hz) == (
        "json", "sensor_msgs/msg/JointState", 0.0)
    assert route_topic("/parameter_events", ["rcl_interfaces/msg/ParameterEvent"], 10.0) is None
    assert route_topic("/x", ["a/msg/A", "b/msg/B"], 10.0) is None  # two types on one name: ambiguous


def test_service_routes():
    assert route_service("/hil_session/command", ["h1_training_interfaces/srv/SessionCommand"], PREFIXES)
    assert route_service("/training_workflow/trigger_training", ["std_srvs/srv/Empty"], PREFIXES)
    assert route_service("/arm/set_mode", ["h1_training_interfaces/srv/SetArmMode"], PREFIXES) is None
    assert route_service("/hil_session/get_parameters", ["rcl_interfaces/srv/GetParameters"], PREFIXES) is None


def test_qos_follows_the_publishers():
    assert choose_qos([True], [True]) == "latched"
    assert choose_qos([False, True], [False, False]) == "sensor"
    assert choose_qos([True, True], [True, False]) == "reliable"
    assert choose_qos([], []) == "reliable"


def test_throttle_keeps_the_rate_without_bursts():
    t = Throttle(10.0)
    passed = sum(t.allow(i / 30.0) for i in range(300))  # 10 s of a 30 fps camera
    assert 95 <= passed <= 101
    assert t.allow(100.0) and not t.allow(100.01)  # after a gap: one frame, no backlog burst
    assert all(Throttle(0).allow(0.0) for _ in range(5))
    with pytest.raises(ValueError):
        Throttle(-1)


def test_parameter_names_and_values():
    name = parameter_name("training_workflow_manager", "workflow.min_episodes_before_training")
    assert name == "/training_workflow_manager.workflow.min_episodes_before_training"
    assert split_parameter_name(name) == ("/training_workflow_manager", "workflow.min_episodes_before_training")
    for bad in ("no_slash.x", "/node", "/.x", "/node."):
        with pytest.raises(ValueError):
            split_parameter_name(bad)
    assert native_to_ros_parameter(50, 3) == (3, "double_value", 50.0)  # JSON 50 for a double parameter
    assert native_to_ros_parameter(50, 2) == (2, "integer_value", 50)
    assert native_to_ros_parameter([1, 2], 8) == (8, "double_array_value", [1.0, 2.0])
    assert native_to_ros_parameter([], 9) == (9, "string_array_value", [])
    assert native_to_ros_parameter("x", 2) == (4, "string_value", "x")  # the node refuses it with its reason
    with pytest.raises(ValueError):
        native_to_ros_parameter(None, 2)
    assert ros_parameter_to_native(ParameterValue(type=3, double_value=2.5)) == 2.5
    assert ros_parameter_to_native(ParameterValue(type=9, string_array_value=["a"])) == ["a"]
    assert ros_parameter_to_native(ParameterValue(type=0)) is None


def test_messages_to_json_with_schema():
    msg = JointState(name=["a", "b"], position=[0.5, math.nan], velocity=[], effort=[])
    msg.header.stamp.sec = 3
    data = rosjson.message_to_dict(msg)
    assert data == {"header": {"stamp": {"sec": 3, "nanosec": 0}, "frame_id": ""}, "name": ["a", "b"],
                    "position": [0.5, None], "velocity": [], "effort": []}
    json.dumps(data, allow_nan=False)
    diag = DiagnosticArray(status=[DiagnosticStatus(level=b"\x02", name="arm", message="FAULT",
                                                    values=[KeyValue(key="k", value="v")])])
    assert rosjson.message_to_dict(diag)["status"][0]["level"] == 2  # the Diagnostics panel's number
    schema = rosjson.message_schema(JointState)
    assert schema["title"] == "sensor_msgs/msg/JointState"
    assert schema["properties"]["header"]["properties"]["stamp"]["properties"]["nanosec"] == {"type": "integer"}
    assert rosjson.message_schema(GetEpisodeInfo.Response)["properties"]["episode"]["title"] == (
        "h1_training_interfaces/msg/EpisodeInfo")


def test_json_to_request_names_what_is_wrong():
    req = rosjson.fill_message(CompareModels.Request(), {"model_ids": ["v1", "v2"], "mode": "ab", "alpha": 0})
    assert (list(req.model_ids), req.mode, req.alpha) == (["v1", "v2"], "ab", 0.0)
    with pytest.raises(ValueError, match="model_ids: expected a list"):
        rosjson.fill_message(CompareModels.Request(), {"model_ids": "v1"})
    with pytest.raises(ValueError, match="no such field"):
        rosjson.fill_message(CompareModels.Request(), {"models": []})
    with pytest.raises(ValueError, match="trials_per_model: 5000000000 does not fit int32"):
        rosjson.fill_message(CompareModels.Request(), {"trials_per_model": 5_000_000_000})
    with pytest.raises(ValueError, match="index: expected an integer"):
        rosjson.fill_message(GetEpisodeInfo.Request(), {"index": 1.5})
    assert rosjson.full_type("std_srvs/Empty", "srv") == "std_srvs/srv/Empty"
    with pytest.raises(ImportError):
        rosjson.import_type("no_such_pkg/msg/X")
