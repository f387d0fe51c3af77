"""ros2 launch h1_training bringup.launch.py profile:=sim   (or profile:=real on the robot laptop)

The node set comes from config/bringup/<profile>.yaml, the same file `h1-training up <profile>` reads.
"""

from h1_training.launch_profile import generate_profile_launch_description


def generate_launch_description():
    return generate_profile_launch_description("sim")
