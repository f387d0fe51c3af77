"""Build a ROS 2 launch description from a bring-up profile (for `ros2 launch` on a real ROS install).

The launch files in launch/ only name a profile; the node set and parameter files come from
config/bringup/<profile>.yaml through ``h1_training.bringup`` — the same source ``h1-training up`` reads.
``launch``/``launch_ros`` are imported here only, so the rest of the package never needs them.
"""

from __future__ import annotations


def generate_profile_launch_description(default_profile: str):
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from h1_training.bringup import load_profile

    def build(context):
        profile = load_profile(LaunchConfiguration("profile").perform(context))
        actions = []
        for spec in profile.nodes:
            if spec.ros:
                actions.append(
                    Node(
                        package="h1_training",
                        executable=spec.executable,
                        name=spec.name,
                        parameters=[str(p) for p in spec.params],
                        arguments=list(spec.args),
                        additional_env=dict(spec.env),
                        output="screen",
                    )
                )
            else:
                actions.append(
                    ExecuteProcess(cmd=[spec.executable, *spec.args], name=spec.name,
                                   additional_env=dict(spec.env), output="screen")
                )
        return actions

    return LaunchDescription(
        [
            DeclareLaunchArgument("profile", default_value=default_profile,
                                  description="bring-up profile in config/bringup (sim, real, ...)"),
            OpaqueFunction(function=build),
        ]
    )
