"""Diffusion Policy inference latency on the CPU: 10 DDIM steps against LeRobot's default 100 DDPM steps, on the
same model and observation.

    h1-training bench diffusion --json
    h1-training bench diffusion --train-size 160x120 --ddpm-calls 3 --json

A Diffusion model (LeRobot 0.4.4's, our defaults: three cameras, ``n_obs_steps`` 2, horizon 16) is trained for a
few steps on a generated dataset (``training/synthetic.py`` episodes converted at ``--train-size``: the weights'
values do not change the cost of an inference), then loaded twice through ``policy.models.load_policy``: once with
``diffusion_sampling="ddpm:100"`` and once with ``"ddim:10"`` (``h1-training serve --diffusion-sampling ddim:10``
does the same). Each answers ``infer`` on a full-size observation (three 640x480 cameras, as the robot sends;
resized by the adapter) after one warm-up call: ``ddim10_p50_ms`` over ``--ddim-calls``, ``ddpm100_p50_ms`` over
``--ddpm-calls`` (few: seconds each), the calls of the two interleaved (a load that comes and goes on a shared
machine falls on both: a run with the DDIM calls first and the DDPM ones after once measured DDIM as slow as DDPM
while another job held the cores). ``speedup`` = ddpm100 / ddim10 (target >= 5: the denoiser runs 10 times
instead of 100; the image encoder runs once per inference either way). Both run in this process, one after the
other, with the torch threads ``H1_TORCH_THREADS`` allows.

Not measured here: success on the simulated task with each sampler. A Diffusion model that solves the sim task
needs thousands of training steps (LeRobot trains PushT for 200k) and an evaluation needs hundreds of 100-step
inferences; neither fits a 2-core CPU in a bench. ``action_gap`` is what is measured instead: the mean absolute
difference, in radians, between the chunks the two samplers return for the same observation (the same seed for
the initial noise, draw by draw), next to ``action_spread`` (the same difference between consecutive DDPM draws,
different seeds): DDIM
is as close to DDPM as DDPM is to itself when ``action_gap`` is not larger than ``action_spread``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.bench.report import size_arg, torch_threads

HELP = "Diffusion Policy CPU inference: p50 with 10 DDIM steps vs 100 DDPM steps (same model and observation)"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-size", type=size_arg, default=(96, 96), metavar="WxH", help="model image size")
    parser.add_argument("--train-steps", type=int, default=2, help="training steps of the timed model")
    parser.add_argument("--ddim-steps", type=int, default=10)
    parser.add_argument("--ddim-calls", type=int, default=10)
    parser.add_argument("--ddpm-calls", type=int, default=3, help="each takes seconds to a minute on 2 cores")
    parser.add_argument("--min-speedup", type=float, default=5.0, help="target: ddpm100_p50_ms / ddim10_p50_ms")
    parser.add_argument("--keep", type=Path, default=None, help="work under this folder and keep it")


def _observation(seed: int = 0) -> dict[str, Any]:
    from h1_training.robot_model import CAMERA_NAMES, NUM_ARM_JOINTS

    rng = np.random.default_rng(seed)
    return {"images": {cam: rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for cam in CAMERA_NAMES},
            "state": rng.uniform(-0.5, 0.5, NUM_ARM_JOINTS).astype(np.float32), "prompt": "reach"}


def _interleaved(policies: dict[str, Any], calls: dict[str, int], obs: dict) -> tuple[dict, dict]:
    """Latencies (ms) and chunks of each policy's ``calls``, the calls of the policies interleaved evenly (a load
    that comes and goes on a shared machine falls on both alike), after one warm-up call each. Each policy's call i
    draws its initial noise with seed i + 1, so that the chunks of two samplers can be compared draw by draw."""
    import torch

    for policy in policies.values():
        policy.reset()
        policy.infer(obs)  # warm-up: allocations
    order = sorted(((i + 0.5) / n, name, i) for name, n in calls.items() for i in range(n))
    times: dict[str, list[float]] = {name: [] for name in policies}
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in policies}
    for _, name, i in order:
        policy = policies[name]
        policy.reset()  # the same observation history for every call
        torch.manual_seed(i + 1)
        t0 = time.perf_counter()
        chunks[name].append(policy.infer(obs)["actions"])
        times[name].append((time.perf_counter() - t0) * 1e3)
    return times, chunks


def run(args: argparse.Namespace) -> dict:
    with contextlib.redirect_stdout(sys.stderr):  # LeRobot prints while loading weights; stdout is the JSON's
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import Target, evaluate
    from h1_training.policy.models import load_policy
    from h1_training.training.convert import convert_sessions
    from h1_training.training.synthetic import write_session
    from h1_training.training.trainer import TrainConfig, run_training

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="h1_bench_diffusion_"))
    try:
        write_session(work / "episodes", 1, 2, 40, 160, 120, 50.0)
        convert_sessions([work / "episodes"], work / "dataset", resize=args.train_size, overwrite=True,
                         progress=False)
        info = run_training(TrainConfig(policy_type="diffusion", dataset_dir=work / "dataset",
                                        output_root=work / "models", steps=args.train_steps, batch_size=4,
                                        device="cpu"))
        from h1_training.training.registry import ModelRegistry

        model_dir = ModelRegistry(work / "models").path(info.id)
        obs = _observation()
        ddpm = load_policy(model_dir, "cpu", diffusion_sampling="ddpm:100")
        ddim = load_policy(model_dir, "cpu", diffusion_sampling=f"ddim:{args.ddim_steps}")
        times, chunks = _interleaved({"ddim": ddim, "ddpm": ddpm}, {"ddim": args.ddim_calls, "ddpm": args.ddpm_calls},
                                     obs)
        ddim_ms, ddim_chunks, ddpm_ms, ddpm_chunks = times["ddim"], chunks["ddim"], times["ddpm"], chunks["ddpm"]
        n = min(len(ddim_chunks), len(ddpm_chunks))
        gap = float(np.mean([np.abs(a - b).mean() for a, b in zip(ddim_chunks[:n], ddpm_chunks[:n])]))
        spread = (float(np.mean([np.abs(a - b).mean() for a, b in zip(ddpm_chunks, ddpm_chunks[1:])]))
                  if len(ddpm_chunks) > 1 else None)
        key = f"ddim{args.ddim_steps}_p50_ms"
        ddim_p50, ddpm_p50 = float(np.median(ddim_ms)), float(np.median(ddpm_ms))
        figures: dict[str, Any] = {
            key: round(ddim_p50, 1),
            "ddpm100_p50_ms": round(ddpm_p50, 1),
            "speedup": round(ddpm_p50 / ddim_p50, 2) if ddim_p50 > 0 else None,
            "latency_max_ms": {"ddim": round(max(ddim_ms), 1), "ddpm": round(max(ddpm_ms), 1)},
            "calls": {"ddim": len(ddim_ms), "ddpm": len(ddpm_ms)},
            "sampling": {"ddim": ddim.metadata.get("sampling"), "ddpm": ddpm.metadata.get("sampling")},
            "action_gap": round(gap, 4),
            "action_spread": round(spread, 4) if spread is not None else None,
            "sim_success": None,  # not measured: see the module docstring
            "inputs": {"train_size": "x".join(map(str, args.train_size)), "cameras": 3, "sent_size": "640x480",
                       "train_steps": args.train_steps, "torch_threads": torch_threads()},
        }
        figures["targets"] = evaluate(figures, [Target("speedup", ">=", args.min_speedup)])
        return figures
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

