"""Policy server benchmark: inference latency per policy type over the real WebSocket, the policy loop's held
ticks, training steps/s, and the peak memory of the server and of each training run.

For every learned policy type it trains a small model on a generated dataset (``training/synthetic.py`` episodes,
converted like ``h1-training convert --resize``) in its own process (a fresh interpreter: its peak RSS is the
training's alone), measuring training steps/s after a few warm-up steps. Then ``h1-training serve`` runs as a
separate process on 127.0.0.1 with all the models, and the bench times ``openpi-client``'s unmodified
``WebsocketClientPolicy.infer`` round trips with full-size observations (three 640x480 cameras by default, as the
robot sends them), each session pinned to one model with ``?model=<id>``:

- ``noop`` is the wire baseline: a built-in model that returns a precomputed zero chunk without looking at the
  observation, so its latency is msgpack + WebSocket + the server's dispatch and nothing else; ``scripted`` (the
  reach, pure numpy) is the cheapest real policy.
- Percentiles come from ``--requests`` (default 1,000) round trips. A model whose warm-up round trip takes
  ``--slow-s`` (1 s) or more gets fewer, as many as fit in ``--slow-budget-s``; ``requests_note`` says so, and p99
  is only reported from 100 requests up (below that it is just the largest samples).
- The policy loop (``session.runner.PolicyLoop``, the session's 50 Hz control thread with its background
  inference) runs against each model for ``--loop-seconds``: ``held_tick_share`` is the share of ticks that
  repeated the last row of a chunk because the next chunk had not arrived (the arm holds still), the stall that
  "no missed ticks" hides.

    h1-training bench serve --json                  # all types; ~25 min on a loaded 2-core CPU (ACT: 1,000 x 0.4 s)
    h1-training bench serve --policies noop,scripted,cnn_lstm --json
    h1-training bench serve --requests 200 --train-steps 50 --device cuda --json

Latency includes msgpack encoding, the loopback WebSocket, resizing, and the model's forward pass. Where the time
of the wire baseline and the scripted model goes, stage by stage (client packing, the server's unpacking, checks,
inference and packing, and the bare-WebSocket floor), is ``h1-training bench policy-loop``'s
``where_the_time_goes`` (3 x 640x480 under ``vga``): the WebSocket transport itself (the floor) and the client's
packing of 2.8 MB take most of it; on the server, the scripted reach (now computed at once: ~20x faster than its
row-by-row loop) and the worker-thread hop (gone for instant policies) were ours to cut, and the page faults on
every message's buffers (``malloc_tuning.keep_message_buffers``). LeRobot's
Diffusion samples with 100 DDPM steps by default, which is what dominates its CPU latency.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.bench.report import size_arg
from h1_training.policy.train_request import DEFAULT_TRAINING_DEVICE

HELP = ("policy server: latency p50/p99 per policy type over 1,000 requests (openpi-client, no-op wire baseline), "
        "policy-loop held ticks, train steps/s, peak RSS")
BASELINES = ("noop", "scripted")  # built-in models: nothing to train



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", default="noop,scripted,cnn_lstm,act,diffusion",
                        help="comma-separated: noop (wire baseline), scripted, and learned policy types")
    parser.add_argument("--requests", type=int, default=1000, help="timed inferences per policy type")
    parser.add_argument("--warmup", type=int, default=5, help="untimed inferences first")
    parser.add_argument("--slow-s", type=float, default=1.0,
                        help="a model whose warm-up round trip takes this long gets fewer requests")
    parser.add_argument("--slow-budget-s", type=float, default=90.0,
                        help="timing budget of such a slow model (its requests = budget / latency, at least 5)")
    parser.add_argument("--loop-seconds", type=float, default=10.0,
                        help="policy loop (50 Hz) run per policy type for held_tick_share; 0 = skip")
    parser.add_argument("--train-steps", type=int, default=8, help="timed training steps per policy type")
    parser.add_argument("--train-warmup", type=int, default=2, help="training steps not counted in steps/s")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--camera-size", type=size_arg, default=(640, 480), metavar="WxH",
                        help="recorded and sent camera frames (default 640x480)")
    parser.add_argument("--train-size", type=size_arg, default=(320, 240), metavar="WxH",
                        help="dataset image size the models train on (convert --resize; default 320x240)")
    parser.add_argument("--device", default=DEFAULT_TRAINING_DEVICE, choices=("auto", "cpu", "cuda"),
                        help="train and serve on")
    parser.add_argument("--keep", type=Path, help="keep the generated data and models in this folder")


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _train_child(ptype: str, dataset: Path, models: Path, steps: int, warmup: int, batch_size: int,
                 device: str) -> tuple[str, dict]:
    """Runs in a fresh (spawned) process: one training, its steps/s and the process's peak RSS."""
    with contextlib.redirect_stdout(sys.stderr):
        from h1_training.bench.report import self_peak_rss_mb
        from h1_training.training.trainer import TrainConfig, run_training

        marks: list[tuple[int, float]] = []
        cfg = TrainConfig(policy_type=ptype, dataset_dir=dataset, output_root=models, steps=warmup + steps,
                          batch_size=batch_size, device=device)
        info = run_training(cfg, progress=lambda p: marks.append((p.step, p.elapsed_s)))
        (s0, t0), (s1, t1) = marks[min(warmup, len(marks)) - 1], marks[-1]
        rate = (s1 - s0) / (t1 - t0) if t1 > t0 else None
        return info.id, {"train_steps_per_s": round(rate, 3) if rate else None, "train_steps_timed": s1 - s0,
                         "final_loss": round(float(info.metrics.get("final_loss", float("nan"))), 5),
                         "train_peak_rss_mb": self_peak_rss_mb()}


def _train(ptype: str, dataset: Path, models: Path, args: argparse.Namespace, device: str) -> tuple[str, dict]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:  # one process per training: its peak RSS is this training's
        return pool.apply(_train_child, (ptype, dataset, models, args.train_steps, args.train_warmup,
                                         args.batch_size, device))


def _time_inference(port: int, model_id: str, obs: dict, args: argparse.Namespace) -> dict:
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    client = WebsocketClientPolicy(f"ws://127.0.0.1:{port}/?model={model_id}")
    try:
        warm = []
        for _ in range(max(1, args.warmup)):
            t0 = time.perf_counter()
            client.infer(obs)
            warm.append(time.perf_counter() - t0)
            if warm[-1] >= args.slow_s and len(warm) >= 1:
                break  # a slow model: one warm-up is enough
        latency_s = min(warm)
        slow = latency_s >= args.slow_s
        n = args.requests if not slow else max(5, min(args.requests, int(args.slow_budget_s / latency_s)))
        round_trip, server = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            result = client.infer(obs)
            round_trip.append((time.perf_counter() - t0) * 1e3)
            server.append(float(result["server_timing"]["infer_ms"]))
        horizon = int(result["actions"].shape[0])
    finally:
        client._ws.close()  # openpi-client has no close(); end the session cleanly
    out = {"latency_p50_ms": _percentile(round_trip, 50),
           "latency_p99_ms": _percentile(round_trip, 99) if len(round_trip) >= 100 else None,
           "latency_max_ms": round(max(round_trip), 3), "latency_mean_ms": round(float(np.mean(round_trip)), 3),
           "server_infer_p50_ms": _percentile(server, 50), "requests": len(round_trip), "action_horizon": horizon}
    if n < args.requests:
        out["requests_note"] = (f"{n} requests, not {args.requests}: a {latency_s:.1f} s model "
                                f"({args.requests} would take {args.requests * latency_s / 60:.0f} min); "
                                "p99 not reported below 100 requests")
    return out


def _loop_held(port: int, model_id: str, obs: dict, seconds: float) -> dict:
    """The session's PolicyLoop at 50 Hz against this model: how many ticks repeated a chunk's last row."""
    from h1_training.policy.client import PolicyClient
    from h1_training.session.policy_loop import PolicyLoop

    failures: list[str] = []
    loop = PolicyLoop(PolicyClient("127.0.0.1", port, model=model_id, request_timeout=120.0), lambda: obs,
                      lambda row, version, proposal: None, failures.append, rate_hz=50.0)
    loop.start()
    try:
        time.sleep(seconds)
    finally:
        loop.stop()  # an inference in flight ends by itself and its thread closes the connection
    st = loop.stats
    return {"loop_ticks": st.ticks, "held_tick_share": round(st.held_ticks / st.ticks, 4) if st.ticks else None,
            "late_tick_share": round(st.late_ticks / st.ticks, 4) if st.ticks else None,
            "loop_inferences": st.inferences, "loop_failure": failures[0] if failures else None}


def run(args: argparse.Namespace) -> dict:
    # lerobot prints while loading weights; keep stdout for the figures (`--json` must stay parseable)
    with contextlib.redirect_stdout(sys.stderr):
        return _run(args)


def _start_server(root: Path, device: str, n_models: int):
    from h1_training.procs import ProcessGroup

    group = ProcessGroup(echo=None)
    group.start_executable("serve", "h1-training", ["serve", "--port", "0", "--models-dir", str(root / "models"),
                                                    "--device", device, "--max-loaded-models", str(n_models),
                                                    "--log-level", "WARNING"])
    line = group.wait_for_line("serve", lambda s: "listening on ws://" in s, timeout=120)
    return group, int(line.rsplit(":", 1)[1])


def _run(args: argparse.Namespace) -> dict:
    from h1_training.bench.report import Target, evaluate, peak_rss_mb
    from h1_training.policy.train_request import resolve_device

    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    learned = [p for p in policies if p not in BASELINES]
    device = resolve_device(args.device)
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="h1_bench_serve_")
    root = Path(args.keep or tmp.name)
    (root / "models").mkdir(parents=True, exist_ok=True)
    per: dict[str, dict[str, Any]] = {p: {} for p in policies}
    model_ids: dict[str, str] = {p: p for p in BASELINES}
    server_rss = None
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
        group, port = _start_server(root, device, len(policies) + 1)
        try:
            for ptype in policies:
                per[ptype].update(_time_inference(port, model_ids[ptype], obs, args))
                if args.loop_seconds > 0:
                    per[ptype].update(_loop_held(port, model_ids[ptype], obs, args.loop_seconds))
            server_rss = peak_rss_mb(group.get("serve").proc.pid)
            if group.unexpected_exits():
                raise RuntimeError(f"the server exited: {group.get('serve').output()[-2000:]}")
        finally:
            group.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()
    obs_bytes = sum(im.nbytes for im in obs["images"].values()) + obs["state"].nbytes
    out: dict[str, Any] = {
        "latency_p50_ms": {p: per[p].get("latency_p50_ms") for p in policies},
        "latency_p99_ms": {p: per[p].get("latency_p99_ms") for p in policies},
        "requests": {p: per[p].get("requests") for p in policies},
        "held_tick_share": {p: per[p].get("held_tick_share") for p in policies},
        "train_steps_per_s": {p: per[p].get("train_steps_per_s") for p in learned},
        "peak_rss_mb": {"server (all models loaded)": server_rss,
                        **{f"train {p}": per[p].get("train_peak_rss_mb") for p in learned}},
        "per_policy": per,
        "device": device,
        "inputs": {"cameras": 3, "camera_size": "x".join(map(str, args.camera_size)),
                   "observation_mb": round(obs_bytes / 1e6, 2), "train_size": "x".join(map(str, args.train_size)),
                   "train_episodes": args.episodes, "train_frames_per_episode": args.frames,
                   "batch_size": args.batch_size, "train_steps_timed": args.train_steps,
                   "requests_asked": args.requests, "loop_seconds": args.loop_seconds, "loop_hz": 50},
        "torch_threads": _torch_threads(),
    }
    if device == "cuda":
        import torch

        out["gpu"] = torch.cuda.get_device_name(0)
    targets = []
    for p in policies:
        slow = "requests_note" in per[p]
        targets.append(Target(f"requests.{p}", ">=", 5 if slow else args.requests))
        if p == "noop":
            targets.append(Target("latency_p99_ms.noop", "<=", 50.0))  # the wire alone: well under a 50 Hz tick
    if "noop" in policies and args.loop_seconds > 0:
        targets.append(Target("held_tick_share.noop", "==", 0.0))  # a fast server never makes the arm hold
    if "scripted" in policies and args.loop_seconds > 0:
        targets.append(Target("held_tick_share.scripted", "==", 0.0))
    out["targets"] = evaluate(out, targets)
    return out


def _torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None
