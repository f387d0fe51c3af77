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
import json
import os
import sys
from pathlib import Path

HELP = "train a policy on a LeRobotDataset and register it"


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from h1_training.policy.models import POLICY_TYPES

    parser.add_argument("--policy", default="act", choices=sorted(POLICY_TYPES), help="policy type")
    parser.add_argument("--dataset", required=True, type=Path, help="LeRobotDataset folder (h1-training convert)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="model registry folder")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the policy's preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--human-weight", type=float, default=1.0,
                        help="sampling weight of human-correction frames relative to policy frames")
    parser.add_argument("--parent", default=None, help="fine-tune from this model (registry id or folder)")
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="policy config option (repeatable)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--deploy", action="store_true", help="deploy the new model when training succeeds")
    parser.add_argument("--json", action="store_true", help="print the ModelInfo as JSON")


def run(args: argparse.Namespace) -> int:
    import logging

    from h1_training.training.registry import ModelRegistry
    from h1_training.training.trainer import TrainConfig, TrainingStopped, run_training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = TrainConfig(policy_type=args.policy, dataset_dir=args.dataset, output_root=args.models,
                          steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          device=args.device, human_weight=args.human_weight, parent_model=args.parent,
                          extra=dict(args.option), num_workers=args.num_workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    # under `accelerate launch` every process runs this; only rank 0 reports, deploys and prints
    main_process = int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(total=cfg.steps, unit="step", desc=f"train {cfg.policy_type}", dynamic_ncols=True,
               disable=not main_process)

    def show(p) -> None:
        bar.n = p.step
        bar.set_postfix(loss=f"{p.loss:.4f}", lr=f"{p.lr:.1e}", epoch=f"{p.epoch:.2f}")
        bar.refresh()

    try:
        info = run_training(cfg, progress=show)
    except KeyboardInterrupt:
        print("\ninterrupted: no model registered", file=sys.stderr)
        return 130
    except TrainingStopped as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    if not main_process:
        return 0
    if args.deploy:
        ModelRegistry(Path(args.models)).deploy(info.id)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, default=str))
    else:
        print(f"registered {info.id} (epoch {info.epoch}) in {args.models}: final loss "
              f"{info.metrics.get('final_loss'):.4f}, {info.metrics.get('steps_per_s')} steps/s"
              + (", deployed" if args.deploy else ""))
    return 0
