"""Training steps/s of our trainer side by side with ``lerobot-train`` (lerobot 0.4.4) on the same dataset, policy
and batch size, and the share of each step spent waiting for data.

    h1-training bench train --json                          # ACT, batch 8, 96x96 images, 3 cameras, 20 timed steps
    h1-training bench train --policy diffusion --steps 10 --json
    h1-training bench train --device cuda --steps 200 --json

One generated episode set (``training/synthetic.py``), converted once (``training.convert``, ``--train-size``),
feeds both. Each trainer runs in its own process after the other (never side by side), for ``--warmup`` untimed
steps then ``--steps`` timed ones:

- ours: ``training.trainer.run_training`` with its defaults (the dataset decoded into memory once when it fits,
  ``training/memory_data.py``; ``num_workers`` 0), timed from its progress reports: steps/s over the timed steps,
  ``data_share`` = time waiting for the batch (loader + preprocessor) / step time;
- ``lerobot-train`` (``python -m lerobot.scripts.lerobot_train``) with its defaults (DataLoader with
  ``--lerobot-num-workers`` = its default 4, frames decoded from the videos per sample) except what must match or
  cannot work here: the same policy options as ours (``--policy.pretrained_backbone_weights=null``: nothing is
  downloaded; ACT's ``chunk_size``/``n_action_steps`` 50, ``training.models``' defaults), ``pyav`` video backend
  (torchcodec finds no FFmpeg libraries on this machine), no checkpoint, no wandb, ``--log_freq=1``: its log line of
  every step gives ``updt_s`` and ``data_s`` (``data_s`` = ``next(dataloader)`` + preprocessor).
  ``lerobot_train_steps_per_s`` is by the wall clock, as ours: timed steps / time between the log lines of the last
  warm-up step and of the last step, read from its unbuffered output as they are written;
  ``lerobot_train_steps_per_s_own_timers`` = timed steps / sum of its ``updt_s`` and ``data_s`` (its loop's
  bookkeeping and logging left out, which favours it), and its ``data_share`` comes from those timers.

``ratio`` = ours / lerobot-train (target >= 1.0); ``data_share`` target <= 0.5 for ours (data loading must not be the
bottleneck). ``peak_rss_mb``: each trainer's main process (ours: ``getrusage`` in its own process; lerobot-train:
its ``VmHWM``, read while it runs; DataLoader workers not included). Short by design (tens of steps): the rates are
what a longer run settles to after warm-up, with the model's first steps (allocations) left out.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from h1_training.bench.report import size_arg, torch_threads

HELP = "training steps/s: our trainer vs lerobot-train on the same dataset, policy and batch (data-loader share)"
LEROBOT_POLICIES = ("act", "diffusion")  # the types lerobot-train knows (our CNN-LSTM and keypoint are ours alone)
_STEP_LINE = re.compile(r"\bstep:(\d+)\b.*\bupdt_s:([0-9.]+)\s+data_s:([0-9.]+)")



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="act", choices=LEROBOT_POLICIES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocations, worker start-up)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100, help="frames per episode")
    parser.add_argument("--camera-size", type=size_arg, default=(160, 120), metavar="WxH", help="recorded frames")
    parser.add_argument("--train-size", type=size_arg, default=(96, 96), metavar="WxH", help="dataset image size")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when torch sees one")
    parser.add_argument("--lerobot-num-workers", type=int, default=4,
                        help="lerobot-train's DataLoader workers (default: its own default, 4)")
    parser.add_argument("--min-ratio", type=float, default=1.0, help="target: ours / lerobot-train steps/s")
    parser.add_argument("--max-data-share", type=float, default=0.5,
                        help="target: share of our step time spent waiting for data")
    parser.add_argument("--keep", type=Path, default=None, help="work under this folder and keep it")


def _policy_options(policy: str) -> dict[str, Any]:
    """Our defaults for ``policy`` (``training.models``), the options lerobot-train is given so that both train the
    same model."""
    from h1_training.policy.models import get_policy_type

    return dict(get_policy_type(policy).defaults)


def _ours_child(dataset: Path, models: Path, policy: str, steps: int, batch_size: int,
                device: str) -> dict[str, Any]:
    """In a fresh process: our trainer, its progress marks (step, elapsed_s, data_s) and its peak RSS."""
    with contextlib.redirect_stdout(sys.stderr):
        from h1_training.bench.report import self_peak_rss_mb
        from h1_training.training.trainer import TrainConfig, run_training

        marks: list[tuple[int, float, float]] = []
        cfg = TrainConfig(policy_type=policy, dataset_dir=dataset, output_root=models, steps=steps,
                          batch_size=batch_size, device=device)
        run_training(cfg, progress=lambda p: marks.append((p.step, p.elapsed_s, p.data_s)))
        return {"marks": marks, "peak_rss_mb": self_peak_rss_mb()}


def rate_from_marks(marks: list[tuple[int, float, float]], warmup: int) -> tuple[float | None, float | None, int]:
    """(steps/s, data share, timed steps) over the marks after step ``warmup``."""
    base = next(((s, t, d) for s, t, d in marks if s == warmup), (0, 0.0, 0.0))
    s1, t1, d1 = marks[-1]
    dt = t1 - base[1]
    if s1 <= base[0] or dt <= 0:
        return None, None, 0
    return (s1 - base[0]) / dt, (d1 - base[2]) / dt, s1 - base[0]


def rate_from_log(lines: list[tuple[float, str]],
                  warmup: int) -> tuple[float | None, float | None, float | None, int]:
    """From lerobot-train's per-step log lines (time read, text) after step ``warmup``: (steps/s by the wall clock
    between the log lines of step ``warmup`` and of the last step, steps/s by its own timers (sum of ``updt_s`` and
    ``data_s``), data share of its timers, timed steps)."""
    update = data = 0.0
    n = 0
    start = end = None
    for t, line in lines:
        m = _STEP_LINE.search(line)
        if not m:
            continue
        step = int(m.group(1))
        if step == warmup:
            start = t
        if step > warmup:
            update += float(m.group(2))
            data += float(m.group(3))
            n += 1
            end = t
    total = update + data
    wall = n / (end - start) if start is not None and end is not None and end > start else None
    if not n or total <= 0:
        return wall, None, None, n
    return wall, n / total, data / total, n


def _lerobot_train(dataset: Path, out: Path, args: argparse.Namespace, device: str) -> dict[str, Any]:
    from h1_training import procs
    from h1_training.bench.report import peak_rss_mb
    from h1_training.training.trainer import _dataset_repo_id

    argv = [sys.executable, "-m", "lerobot.scripts.lerobot_train",
            f"--dataset.repo_id={_dataset_repo_id(dataset)}", f"--dataset.root={dataset}",
            "--dataset.video_backend=pyav", f"--policy.type={args.policy}", f"--policy.device={device}",
            "--policy.push_to_hub=false", f"--batch_size={args.batch_size}", f"--steps={args.warmup + args.steps}",
            "--log_freq=1", "--save_checkpoint=false", "--wandb.enable=false", f"--output_dir={out}",
            f"--num_workers={args.lerobot_num_workers}", "--seed=0"]
    for key, value in _policy_options(args.policy).items():
        argv.append(f"--policy.{key}={'null' if value is None else value}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TQDM_DISABLE": "1",
           "PYTHONUNBUFFERED": "1"}  # each log line read as it is written: its arrival time is the step's end
    lines: list[tuple[float, str]] = []
    peak = [0.0]
    stop = threading.Event()

    def watch(proc) -> None:  # VmHWM is the kernel's running peak: the last read before the exit is the peak
        def loop() -> None:
            while not stop.wait(0.5):
                value = peak_rss_mb(proc.pid)
                if value:
                    peak[0] = max(peak[0], value)
        threading.Thread(target=loop, name="bench-rss", daemon=True).start()

    t0 = time.perf_counter()
    try:
        result = procs.run(argv, on_line=lambda line: lines.append((time.perf_counter(), line)), stderr="stdout",
                           env=env, on_start=watch, timeout_s=3600)
    finally:
        stop.set()
    if result.rc != 0:
        raise RuntimeError(f"lerobot-train exited {result.rc}: " + " | ".join(line for _, line in lines[-15:]))
    return {"lines": lines, "wall_s": time.perf_counter() - t0, "peak_rss_mb": peak[0] or None}


def run(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import Target, evaluate
    from h1_training.training.convert import convert_sessions
    from h1_training.training.synthetic import write_session

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="h1_bench_train_"))
    try:
        w, h = args.camera_size
        write_session(work / "episodes", 1, args.episodes, args.frames, w, h, 50.0)
        dataset = work / "dataset"
        summary = convert_sessions([work / "episodes"], dataset, resize=args.train_size, overwrite=True,
                                   progress=False)
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:  # its own process, its own RSS
            ours = pool.submit(_ours_child, dataset, work / "models", args.policy, args.warmup + args.steps,
                               args.batch_size, device).result()
        ours_rate, ours_share, ours_n = rate_from_marks(ours["marks"], args.warmup)
        plain = _lerobot_train(dataset, work / "lerobot_out", args, device)
        lr_rate, lr_own_rate, lr_share, lr_n = rate_from_log(plain["lines"], args.warmup)
        figures: dict[str, Any] = {
            "train_steps_per_s": round(ours_rate, 4) if ours_rate else None,
            "lerobot_train_steps_per_s": round(lr_rate, 4) if lr_rate else None,
            "lerobot_train_steps_per_s_own_timers": round(lr_own_rate, 4) if lr_own_rate else None,
            "ratio": round(ours_rate / lr_rate, 2) if ours_rate and lr_rate else None,
            "data_share": {"ours": round(ours_share, 3) if ours_share is not None else None,
                           "lerobot_train": round(lr_share, 3) if lr_share is not None else None},
            "timed_steps": {"ours": ours_n, "lerobot_train": lr_n},
            "peak_rss_mb": {"ours": ours["peak_rss_mb"], "lerobot_train": plain["peak_rss_mb"]},
            "lerobot_train_wall_s": round(plain["wall_s"], 1),
            "device": device,
            "inputs": {"policy": args.policy, "batch_size": args.batch_size, "warmup_steps": args.warmup,
                       "episodes": summary.episodes, "frames": summary.frames, "cameras": 3,
                       "camera_size": f"{w}x{h}", "train_size": "x".join(map(str, args.train_size)),
                       "policy_options": _policy_options(args.policy),
                       "lerobot_num_workers": args.lerobot_num_workers, "torch_threads": torch_threads()},
        }
        figures["targets"] = evaluate(figures, [Target("ratio", ">=", args.min_ratio),
                                                Target("data_share.ours", "<=", args.max_data_share),
                                                Target("timed_steps.ours", "==", args.steps),
                                                Target("timed_steps.lerobot_train", "==", args.steps)])
        return figures
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

