"""Build a ROS 2 launch description from a bring-up profile (for `ros2 launch` on a real ROS install).

The launch files in launch/ only name a profile; the node set, parameter files and private loopback ports come
from config/bringup/<profile>.yaml through ``h1_training.bringup.launch_entries`` — the same source and the same
port plan ``h1-training up`` uses, so both start the same processes. ``launch``/``launch_ros`` are imported here
only, so the rest of the package never needs them.
"""

from __future__ import annotations


def profile_actions(profile_name: str) -> list:
    """The launch actions of one profile: a ``launch_ros`` ``Node`` per ROS process, an ``ExecuteProcess`` for the
    others, and (all but the robot's profile) loopback-only discovery as ``up`` sets it."""
    from launch.actions import ExecuteProcess, LogInfo, SetEnvironmentVariable
    from launch_ros.actions import Node

    from h1_training.bringup import launch_entries, load_profile, loopback_only, plan_ports

    profile = load_profile(profile_name)
    ports = plan_ports(profile)
    actions: list = []
    if loopback_only(profile):
        actions.append(SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))
    if ports.mapping:
        moved = ", ".join(f"{old}->{new}" for old, new in ports.mapping.items())
        actions.append(LogInfo(msg=f"loopback ports (parameter file -> this stack): {moved}"))
    for entry in launch_entries(profile, ports):
        if entry.ros:
            parameters: list = list(entry.param_files)
            if entry.overrides:
                parameters.append(dict(entry.overrides))
            actions.append(Node(package="h1_training", executable=entry.executable, name=entry.name,
                                parameters=parameters, arguments=list(entry.arguments),
                                additional_env=dict(entry.env), output="screen"))
        else:
            actions.append(ExecuteProcess(cmd=[entry.executable, *entry.arguments], name=entry.name,
                                          additional_env=dict(entry.env), output="screen"))
    return actions


def generate_profile_launch_description(default_profile: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def build(context):
        return profile_actions(LaunchConfiguration("profile").perform(context))

    return LaunchDescription(
        [
            DeclareLaunchArgument("profile", default_value=default_profile,
                                  description="bring-up profile in config/bringup (sim, sim_hil, real, ...)"),
            OpaqueFunction(function=build),
        ]
    )
