"""The RoArm seed's training workflow automation on the H1 stack (no rclpy): see ``machine.py``."""
