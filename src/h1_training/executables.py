"""Every executable of the package in one table: console script name -> ``module:function``.

setup.py reads this file (by path, without importing the package) to make the console scripts, and
``procs.resolve_executable`` runs a node through the importing interpreter from the same table, so a test
or ``h1-training up`` always runs the code it imported, even when the installed scripts are stale.
"""

from __future__ import annotations

# One console script per node (ros2 run h1_training <name>).
NODES: dict[str, str] = {
    "h1_arm_node": "h1_training.nodes.arm_node:main",
    "inspire_hand_node": "h1_training.nodes.hand_node:main",
    "camera_node": "h1_training.nodes.camera_node:main",
    "episode_recorder": "h1_training.nodes.recorder_node:main",
    "h1_sim": "h1_training.nodes.sim.h1_sim:main",
    "inspire_sim": "h1_training.nodes.sim.inspire_sim:main",
    "camera_sim": "h1_training.nodes.sim.camera_sim:main",
    "sim_operator": "h1_training.nodes.sim.sim_operator:main",
    "hil_session": "h1_training.nodes.hil_session_node:main",
    "hil_console": "h1_training.nodes.hil_console_node:main",
    "dataset_manager": "h1_training.nodes.dataset_manager_node:main",
    "model_comparison": "h1_training.nodes.model_comparison_node:main",
    "training_workflow_manager": "h1_training.nodes.training_workflow_manager_node:main",
    "foxglove_gateway": "h1_training.nodes.foxglove_gateway_node:main",
    "training_web_app": "h1_training.nodes.training_web_app_node:main",
    "sim_ab_trials": "h1_training.nodes.sim.ab_trials:main",
}

# The command-line tool.
CLI: dict[str, str] = {"h1-training": "h1_training.cli:main"}

ALL: dict[str, str] = {**CLI, **NODES}
