"""The H1 seed's workflow (human-in-the-loop recording) on the robot laptop:

    ros2 launch h1_training h1_hil.launch.py               # real robot (profile "real")
    ros2 launch h1_training h1_hil.launch.py profile:=sim_hil  # simulated robot, GPU side and session

The node set comes from config/bringup/<profile>.yaml.
"""

from h1_training.launch_profile import generate_profile_launch_description


def generate_launch_description():
    return generate_profile_launch_description("real")
