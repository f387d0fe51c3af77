"""foxglove_gateway as a real process with the simulated robot, driven by a plain foxglove.sdk.v1 WebSocket client
(test/foxglove_ws.py: the ``websockets`` package and the protocol, no project code), checked on the ROS side with
rclpy: joint states as JSON for the Plot panel, camera images as foxglove.CompressedImage decoded with the
protobuf schema the server advertises, a ROS subscription only while a client subscribes, services forwarded with
their errors, parameters set through Foxglove and read back through ROS (a refused value keeps the old one)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from foxglove_ws import FoxgloveClient
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from rcl_interfaces.srv import GetParameters
from std_msgs.msg import String

from h1_training.bringup import load_profile, start_profile
from h1_training.foxglove.mapping import DEFAULT_PORT, GATEWAY_PARAMS
from h1_training.nodes.common import LATCHED_QOS, SENSOR_QOS
from h1_training.procs import wait_until
from h1_training.recording import layout as L
from h1_training.training.synthetic import make_episode
from h1_training_interfaces.msg import TrainerStatus, WorkflowStatus

pytestmark = pytest.mark.timeout(240)

ROBOT = ("h1_sim", "h1_arm_node", "camera_sim", "camera_node")
CAMERA = "/camera/ego_cam/compressed"


def start_gateway(procs, *extra: str) -> str:
    procs.start_executable("foxglove_gateway", "foxglove_gateway",
                           ["--ros-args", "-p", "port:=0", "-p", "discovery_period_s:=0.5", *extra])
    line = procs.wait_for_line("foxglove_gateway", lambda s: "listening on ws://" in s, timeout=60)
    return line.rsplit(" ", 1)[1]


@pytest.fixture
def stack(procs, tmp_path):
    profile = load_profile("sim")  # its robot side, on private ports
    start_profile(procs, profile, skip=tuple(n.name for n in profile.nodes if n.name not in ROBOT))
    root = tmp_path / "data"
    for i in range(2):
        L.write_episode(L.episode_path(root, 1, i), make_episode(40, 32, 24, seed=i))
    procs.start_executable("dataset_manager", "dataset_manager", [
        "--ros-args", "-p", f"roots:=['{root}']", "-p", "refresh_period_s:=0"])
    return start_gateway(procs)


def decode_image(channel: dict, payload: bytes):
    assert (channel["encoding"], channel["schemaName"], channel["schemaEncoding"]) == (
        "protobuf", "foxglove.CompressedImage", "protobuf")
    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("foxglove.CompressedImage"))
    return cls.FromString(payload)


def gateway_subscribers(probe, topic: str) -> int:
    return sum(1 for i in probe.node.get_subscriptions_info_by_topic(topic) if i.node_name == "foxglove_gateway")


def ros_parameter(probe, node: str, name: str):
    reply = probe.call(GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=[name]), timeout=15)
    return reply.values[0]


def test_gateway_defaults_are_the_seeds():
    specs = {s.name: s.default for s in GATEWAY_PARAMS}
    assert (specs["port"], specs["address"], specs["camera_rate_hz"]) == (DEFAULT_PORT, "127.0.0.1", 10.0) == (
        8765, "127.0.0.1", 10.0)


def test_topics_services_parameters_over_foxglove_sdk_v1(stack, probe):
    client = FoxgloveClient(stack)
    try:
        info = client.wait(lambda: client.server_info, 10, "no serverInfo")
        assert {"services", "parameters", "time"} <= set(info["capabilities"])
        client.wait(lambda: len(client.times) >= 2, 10, "no server time")

        # joint states: JSON with the ROS field names (what Plot reads as /joint_states.position[0])
        joints = client.channel("/joint_states")
        assert (joints["encoding"], joints["schemaName"], joints["schemaEncoding"]) == (
            "json", "sensor_msgs/msg/JointState", "jsonschema")
        assert json.loads(joints["schema"])["properties"]["position"] == {"type": "array", "items": {"type": "number"}}
        diag = client.channel("/diagnostics")
        assert diag["schemaName"] == "diagnostic_msgs/msg/DiagnosticArray"  # the Diagnostics panel's type

        # a camera: advertised, but nothing taken off ROS until a client subscribes
        cam = client.channel(CAMERA)
        probe.wait_for_publisher(CAMERA, timeout=60)
        time.sleep(1.0)
        assert gateway_subscribers(probe, CAMERA) == 0

        sub_joints = client.subscribe(joints["id"])
        sub_cam = client.subscribe(cam["id"])
        wait_until(lambda: gateway_subscribers(probe, CAMERA) == 1, 10, "gateway subscribed to the camera")
        client.wait(lambda: len(client.messages[sub_joints]) >= 5, 60, "no joint states")
        stamp, payload = client.messages[sub_joints][-1]
        state = json.loads(payload)
        assert len(state["position"]) == 14 and all(isinstance(x, float) for x in state["position"])
        assert state["name"][0].startswith("left_shoulder") and set(state["header"]["stamp"]) == {"sec", "nanosec"}
        assert stamp > 0

        client.wait(lambda: len(client.messages[sub_cam]) >= 1, 60, "no camera image")
        image = decode_image(cam, client.messages[sub_cam][-1][1])
        assert image.format == "jpeg" and image.data[:2] == b"\xff\xd8" and image.timestamp.seconds > 0
        # forwarded at camera_rate_hz (10) although the camera publishes 30 fps: count over a window
        n0, t0 = len(client.messages[sub_cam]), time.monotonic()
        time.sleep(3.0)
        n1, t1 = len(client.messages[sub_cam]), time.monotonic()
        assert 1 <= n1 - n0 <= 10 * (t1 - t0) + 2

        client.unsubscribe(sub_cam)
        wait_until(lambda: gateway_subscribers(probe, CAMERA) == 0, 10, "gateway let go of the camera")

        # a topic known only through a subscriber: subscribed on ROS once a (best-effort) publisher appears
        probe.capture(String, "/late_topic", SENSOR_QOS)
        late = client.channel("/late_topic")
        sub_late = client.subscribe(late["id"])
        time.sleep(1.5)  # the gateway's graph scans (0.5 s) see no publisher yet
        pub = probe.publisher(String, "/late_topic", SENSOR_QOS)

        def publish_until_received() -> bool:
            pub.publish(String(data="late"))
            return len(client.messages[sub_late]) > 0
        wait_until(publish_until_received, 20, "a message on /late_topic", interval=0.2)
        assert json.loads(client.messages[sub_late][-1][1]) == {"data": "late"}

        # services: forwarded with JSON request/response schemas; errors come back as serviceCallFailure
        svc = client.service("/lerobot/get_episode_info")
        assert svc["type"] == "h1_training_interfaces/srv/GetEpisodeInfo"
        assert "index" in json.loads(svc["request"]["schema"])["properties"]
        kind, reply = client.call_service("/lerobot/refresh_datasets", {})
        assert (kind, reply) == ("ok", {})
        kind, reply = client.call_service("/lerobot/get_episode_info",
                                          {"dataset": "training_session_epoch1", "index": 1})
        assert kind == "ok" and reply["success"], reply
        assert reply["episode"]["frames"] == 40 and reply["episode"]["index"] == 1
        kind, reply = client.call_service("/lerobot/get_episode_info", {"dataset": "training_session_epoch1",
                                                                        "index": "one"})
        assert kind == "error" and "index" in reply and "integer" in reply
        assert "/episode_recorder/start" not in client.services  # no recorder in this stack: nothing advertised
        assert "/dataset_manager/get_parameters" not in client.services  # parameters are parameters

        # parameters: every node's, named /<node>.<param>; set through Foxglove, read back through ROS
        everything = client.get_parameters([])
        assert everything["/dataset_manager.refresh_period_s"] == 0.0
        assert everything["/h1_arm_node.dds_interface"] == "lo"
        after = client.set_parameters({"/dataset_manager.refresh_period_s": 30})  # JSON int for a double
        assert after == {"/dataset_manager.refresh_period_s": 30.0}
        assert ros_parameter(probe, "dataset_manager", "refresh_period_s").double_value == 30.0
        after = client.set_parameters({"/dataset_manager.refresh_period_s": -1.0})  # below the node's minimum
        assert after == {"/dataset_manager.refresh_period_s": 30.0}
        assert ros_parameter(probe, "dataset_manager", "refresh_period_s").double_value == 30.0
        refused = client.wait(lambda: [s for s in client.statuses if "refused" in s["message"]], 10, "no status")
        assert refused[0]["level"] == 2 and "refresh_period_s" in refused[0]["message"]
    finally:
        client.close()


def test_workflow_trigger_and_seed_parameter_through_foxglove(procs, probe, tmp_path: Path):
    """The seed's trigger_training through Foxglove starts a real job of the workflow manager on a real server
    (the scripted policy: trains in well under a second, no torch); workflow.min_episodes_before_training set
    through Foxglove is what ROS reads back and what the manager's status shows."""
    data, models = tmp_path / "data", tmp_path / "models"
    for i in range(2):
        L.write_episode(L.episode_path(data, 1, i), make_episode(20, 32, 24, seed=i))
    procs.start_executable("policy_server", "h1-training", ["serve", "--port", "0", "--models-dir", str(models),
                                                            "--data-dir", str(data), "--device", "cpu"])
    line = procs.wait_for_line("policy_server", lambda s: "listening on ws://" in s, timeout=90)
    port = int(line.rsplit(":", 1)[1])
    status = probe.capture(WorkflowStatus, "/training_workflow/status", LATCHED_QOS)
    trainer = probe.capture(TrainerStatus, "/lerobot/trainer_status", LATCHED_QOS)
    procs.start_executable("training_workflow_manager", "training_workflow_manager", [
        "--ros-args", "-p", f"server.url:=http://127.0.0.1:{port}", "-p", f"workflow.data_dir:={data}",
        "-p", f"workflow.state_file:={tmp_path / 'state.json'}", "-p", "workflow.auto_train_enabled:=false",
        "-p", "workflow.poll_period_s:=0.5", "-p", "status_period_s:=0.3", "-p", "training.policy_type:=scripted"])
    status.wait(where=lambda m: m.server_reachable, timeout=60)
    url = start_gateway(procs)
    client = FoxgloveClient(url)
    try:
        kind, reply = client.call_service("/training_workflow/trigger_training", {})
        assert (kind, reply) == ("ok", {})
        job = trainer.wait(where=lambda m: m.state_name == "SUCCEEDED", timeout=90)
        assert job.origin == "workflow_manager" and job.policy_type == "scripted" and job.model_version
        name = "/training_workflow_manager.workflow.min_episodes_before_training"
        assert client.set_parameters({name: 7}) == {name: 7}
        value = ros_parameter(probe, "training_workflow_manager", "workflow.min_episodes_before_training")
        assert value.integer_value == 7
        assert status.wait(where=lambda m: m.min_episodes_before_training == 7, timeout=10)
        assert client.set_parameters({name: 0}) == {name: 7}  # below the node's minimum: refused, value kept
    finally:
        client.close()
