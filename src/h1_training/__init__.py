"""h1_training: human-in-the-loop training loop for the Unitree H1-2 with Inspire hands.

Pure logic lives in the subpackages (no rclpy import); ``h1_training.nodes`` holds the thin ROS adapters.
"""

__version__ = "0.1.0"
