"""ROS faces of the emulators, the simulated operator and the simulated trial runner."""
