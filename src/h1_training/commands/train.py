"""Train a policy (act, diffusion, cnn_lstm) on a converted dataset and register the model.

Examples::

    h1-training train --policy act --dataset data/lerobot/epoch3 --models models --steps 20000
    h1-training train --policy cnn_lstm --dataset data/lerobot/epoch3 --models models --human-weight 3 \\
        --option chunk_size=50 --option image_size=[96,128] --deploy
    h1-training train --policy act --dataset data/lerobot/epoch4 --models models --parent v3-act-20250101T000000Z
    accelerate launch --multi_gpu --num_processes 4 -m h1_training.training.trainer --policy act ...  # several GPUs

``--option KEY=VALUE`` sets a field of the policy's LeRobot config (VALUE is JSON when it parses as JSON).
"""

from __future__ import annotations

import argparse

HELP = "train a policy on a LeRobotDataset and register it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from h1_training.training.trainer import add_arguments as trainer_arguments

    trainer_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from h1_training.training.trainer import run_cli

    return run_cli(args)
