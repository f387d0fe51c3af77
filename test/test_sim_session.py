"""The simulated robot, its real drivers, the recorder and the scripted operator as separate processes on
loopback: custom messages (ArmCommand) and services (SetArmMode, StartEpisode, SaveEpisode) cross process
boundaries, parameters are set the way `ros2 param set` does it, and the recorded episode tells the story."""

from __future__ import annotations

import numpy as np
import pytest
from rcl_interfaces.srv import DescribeParameters, ListParameters
from test_hil_session import SEED_NODES

from h1_training.bringup import load_profile, start_profile
from h1_training.recording.layout import read_episode
from h1_training.sim.operator_script import POLICY_MISS_RAD, REACH_RAD


def start_sim(procs, save_dir, skip: tuple[str, ...] = SEED_NODES):
    start_profile(procs, load_profile("sim"), {"episode_recorder": ["-p", f"save_dir:={save_dir}"]}, skip=skip)


def _robot_side_ready(probe) -> None:
    for name in ("h1_arm_node", "episode_recorder", "camera_node", "inspire_hand_node"):
        probe.wait_for_node(name, timeout=60)
    probe.wait_for_service("/episode_recorder/start", timeout=30)
    probe.wait_for_service("/arm/set_mode", timeout=30)


@pytest.fixture
def sim_stack(procs, probe, tmp_path):
    """The robot side of the sim profile (the seed nodes left out: the scripted operator talks to none of them)."""
    start_sim(procs, tmp_path)
    _robot_side_ready(probe)
    return tmp_path


@pytest.fixture
def full_sim_stack(procs, probe, tmp_path):
    start_sim(procs, tmp_path, skip=())
    _robot_side_ready(probe)
    return tmp_path


def test_scripted_hil_episode_end_to_end(sim_stack, procs):
    operator = procs.start_executable(
        "sim_operator", "sim_operator",
        ["--ros-args", "-p", "episodes:=1", "-p", "policy_seconds:=3.0", "-p", "human_seconds:=3.0"],
        expect_exit=True,
    )
    operator.proc.wait(timeout=120)
    assert operator.proc.returncode == 0, operator.output()
    files = sorted(sim_stack.rglob("episode_*.hdf5"))
    assert len(files) == 1 and files[0].parent.name == "training_session_epoch1"
    ep = read_episode(files[0], with_images=False)
    phases = np.array(ep.phase)
    policy, human = phases == "policy", phases == "human"
    # one policy stretch, then one human stretch, saved from damping (the seed's EXECUTING -> DAMPING -> SAVING)
    assert np.flatnonzero(policy).max() < np.flatnonzero(human).min(), "policy frames after the human phase"
    # the operator asked for 3 s of each: both stretches are there (over a second each at 50 Hz; how many samples a
    # loaded machine fits in 3 s is the recorder bench's business), and the seed's attrs count them
    assert policy.sum() >= 50 and human.sum() >= 50, (policy.sum(), human.sum())
    assert (ep.attrs["policy_frames"], ep.attrs["human_frames"]) == (policy.sum(), human.sum())
    # the policy's commands reached the recorder as actions, zeros while the human had control (seed contract)
    assert np.abs(ep.action[policy][-10:] - POLICY_MISS_RAD).max() < 1e-3
    assert np.all(ep.action[human] == 0)
    # the arm followed the policy, then the operator moved it toward the right pose in damping
    assert np.abs(ep.qpos[policy][-1] - POLICY_MISS_RAD).max() < 0.15
    dist_to_reach = np.abs(ep.qpos[human] - REACH_RAD).max(axis=1)
    assert dist_to_reach.min() < 0.5 * np.abs(POLICY_MISS_RAD - REACH_RAD).max() + 0.05
    assert int(ep.attrs.get("success", -1)) == 1


def test_every_node_rejects_out_of_range_parameters_with_a_reason(full_sim_stack, probe):
    checked = 0
    for node in load_profile("sim").nodes:
        names = probe.call(ListParameters, f"/{node.name}/list_parameters", ListParameters.Request()).result.names
        described = probe.call(DescribeParameters, f"/{node.name}/describe_parameters",
                               DescribeParameters.Request(names=list(names))).descriptors
        ranged = [d for d in described
                  if d.floating_point_range and not d.read_only and d.floating_point_range[0].to_value < 1e12]
        assert ranged, f"{node.name} declares no ranged float parameter"
        desc = ranged[0]
        too_big = desc.floating_point_range[0].to_value * 2 + 1.0
        result = probe.set_parameter(node.name, desc.name, float(too_big))
        assert not result.successful, f"{node.name}.{desc.name}={too_big} was accepted"
        # rclpy checks the descriptor range first ("out of range ... Max"), our ParamSpec check says "maximum"
        assert desc.name in result.reason and ("out of range" in result.reason or "maximum" in result.reason)
        checked += 1
    assert checked == len(load_profile("sim").nodes)
