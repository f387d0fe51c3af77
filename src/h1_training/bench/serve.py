"""Policy server benchmark: inference latency per policy type over the real WebSocket, and training steps/s.

For every policy type it trains a small model on a generated dataset (``training/synthetic.py`` episodes,
converted like ``h1-training convert --resize``), measuring training steps/s after a few warm-up steps; then it
serves all the models from one ``PolicyServer`` on 127.0.0.1 and times ``openpi-client``'s unmodified
``WebsocketClientPolicy.infer`` round trips with full-size observations (three 640x480 cameras by default, as the
robot sends them), each session pinned to one model with ``?model=<id>``. ``scripted`` is the wire baseline
(no model). Latency includes msgpack encoding, the loopback WebSocket, resizing, and the model's forward pass.

    h1-training bench serve --json                  # all types; ~30 min on a 2-core CPU (ACT/Diffusion training)
    h1-training bench serve --policies scripted,cnn_lstm --json
    h1-training bench serve --requests 200 --train-steps 50 --device cuda --json

Warm-up inferences and a time cap (``--max-seconds``) keep slow CPU models bounded; ``requests`` in the output
says how many round trips were timed. LeRobot's Diffusion samples with 100 DDPM steps by default, which is what
dominates its CPU latency.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HELP = "policy server: inference latency p50/p99 per policy type (openpi-client over WebSocket), train steps/s"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WxH, got {text!r}") from exc
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size too small: {text}")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", default="scripted,cnn_lstm,act,diffusion",
                        help="comma-separated policy types (default: all, plus the scripted wire baseline)")
    parser.add_argument("--requests", type=int, default=100, help="timed inferences per policy type")
    parser.add_argument("--warmup", type=int, default=5, help="untimed inferences first")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="stop timing a policy type after this long (slow CPU models), reporting what was done")
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps per policy type")
    parser.add_argument("--train-warmup", type=int, default=2, help="training steps not counted in steps/s")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--camera-size", type=_size, default=(640, 480), metavar="WxH",
                        help="recorded and sent camera frames (default 640x480)")
    parser.add_argument("--train-size", type=_size, default=(320, 240), metavar="WxH",
                        help="dataset image size the models train on (convert --resize; default 320x240)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="train and serve on")
    parser.add_argument("--keep", type=Path, help="keep the generated data and models in this folder")


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _train(ptype: str, dataset: Path, models: Path, args: argparse.Namespace, device: str) -> tuple[str, dict]:
    from h1_training.training.trainer import TrainConfig, run_training

    marks: list[tuple[int, float]] = []
    cfg = TrainConfig(policy_type=ptype, dataset_dir=dataset, output_root=models,
                      steps=args.train_warmup + args.train_steps, batch_size=args.batch_size, device=device)
    info = run_training(cfg, progress=lambda p: marks.append((p.step, p.elapsed_s)))
    (s0, t0), (s1, t1) = marks[min(args.train_warmup, len(marks)) - 1], marks[-1]
    rate = (s1 - s0) / (t1 - t0) if t1 > t0 else None
    return info.id, {"train_steps_per_s": round(rate, 3) if rate else None, "train_steps_timed": s1 - s0,
                     "final_loss": round(float(info.metrics.get("final_loss", float("nan"))), 5)}


def _time_inference(port: int, model_id: str, obs: dict, args: argparse.Namespace) -> dict:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    client = WebsocketClientPolicy(f"ws://127.0.0.1:{port}/?model={model_id}")
    try:
        deadline = time.monotonic() + args.max_seconds
        for i in range(args.warmup):  # at least one; slow models (Diffusion on a CPU) get fewer
            client.infer(obs)
            if i >= 1 and time.monotonic() > deadline - args.max_seconds / 2:
                break
        round_trip, server = [], []
        deadline = time.monotonic() + args.max_seconds
        for _ in range(args.requests):
            t0 = time.perf_counter()
            result = client.infer(obs)
            round_trip.append((time.perf_counter() - t0) * 1e3)
            server.append(float(result["server_timing"]["infer_ms"]))
            if time.monotonic() > deadline:
                break
        horizon = int(result["actions"].shape[0])
    finally:
        client._ws.close()  # openpi-client has no close(); end the session cleanly
    return {"latency_p50_ms": _percentile(round_trip, 50), "latency_p99_ms": _percentile(round_trip, 99),
            "latency_mean_ms": round(float(np.mean(round_trip)), 3), "server_infer_p50_ms": _percentile(server, 50),
            "requests": len(round_trip), "action_horizon": horizon}


def run(args: argparse.Namespace) -> dict:
    # lerobot prints while loading weights; keep stdout for the figures (`--json` must stay parseable)
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    import logging

    from h1_training.serve.server import PolicyServer, ServerConfig

    logging.getLogger().setLevel(logging.WARNING)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    learned = [p for p in policies if p != "scripted"]
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="h1_bench_serve_")
    root = Path(args.keep or tmp.name)
    per: dict[str, dict[str, Any]] = {p: {} for p in policies}
    model_ids: dict[str, str] = {"scripted": "scripted"}
    try:
        if learned:
            from h1_training.training.convert import convert_sessions
            from h1_training.training.synthetic import write_session

            width, height = args.camera_size
            write_session(root / "data", 1, episodes=args.episodes, frames=args.frames, width=width, height=height)
            dataset = root / "dataset"
            convert_sessions([root / "data"], dataset, resize=args.train_size, overwrite=True, progress=False)
            for ptype in learned:
                model_ids[ptype], figures = _train(ptype, dataset, root / "models", args, device)
                per[ptype].update(figures)
        rng = np.random.default_rng(0)
        w, h = args.camera_size
        obs = {"images": {c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                          for c in ("cam_head", "cam_left_wrist", "cam_right_wrist")},
               "state": np.zeros(14, np.float32), "prompt": "pick up the cup"}
        server = PolicyServer(ServerConfig(port=0, models_dir=root / "models", device=device,
                                           max_loaded_models=len(policies) + 1))
        port = server.start_background()
        try:
            for ptype in policies:
                per[ptype].update(_time_inference(port, model_ids[ptype], obs, args))
        finally:
            server.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    out: dict[str, Any] = {
        "latency_p50_ms": {p: per[p].get("latency_p50_ms") for p in policies},
        "latency_p99_ms": {p: per[p].get("latency_p99_ms") for p in policies},
        "train_steps_per_s": {p: per[p].get("train_steps_per_s") for p in learned},
        "per_policy": per,
        "device": device,
        "camera_size": "x".join(map(str, args.camera_size)),
        "train_size": "x".join(map(str, args.train_size)),
        "batch_size": args.batch_size,
        "host": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {_torch_threads()}",
    }
    if device == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None
