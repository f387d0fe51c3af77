"""Policy round trip side by side: our server against openpi's own server and a bare WebSocket floor.

    h1-training bench policy-loop --json
    h1-training bench policy-loop --calls 300 --no-fail

The unmodified ``openpi-client`` (``WebsocketClientPolicy.infer``) calls, interleaved in one run, after a warm-up:

* ours: ``h1-training serve`` (its own process) serving the built-in ``noop`` model (``?model=noop``);
* openpi: PyPI ``openpi-server`` (a packaging of openpi's ``WebsocketPolicyServer``, unmodified) in its own process
  wrapping the same no-op policy (``policy.scripted.NoopPolicy``);
* floor: a bare ``websockets`` server in its own process that answers the same packed observation bytes with the
  same packed reply (no msgpack at either end): what the wire alone costs.

Both image cases: 3 x 224x224 (keys at the top level: ``rtt_p50_ms``, ``rtt_p99_ms``, ``openpi_rtt_p50_ms``,
``openpi_rtt_p99_ms``, ``ratio_p50`` = ours / openpi, ``floor_p50_ms``) and 3 x 640x480 (the same keys under
``vga``). Targets (issue 14): ``ratio_p50`` <= 0.8 and ``rtt_p50_ms`` <= 1 ms at 224x224.

``openpi-server`` pins nothing we lack but its client pins numpy<2, so ``scripts/setup_env.sh`` installs it with
``--no-deps``; when it is missing the openpi side is skipped and said so (the ratio target is then not measured).
Not here: the session loop against a slow model (issue 14 (b)).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HELP = "openpi-client round trip: our server vs openpi's WebsocketPolicyServer vs a bare WebSocket echo"
CAMERAS = ("cam_head", "cam_left_wrist", "cam_right_wrist")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per server and image size (>= 100)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per server first")


def openpi_server_main(port: int) -> None:
    """Child: openpi's own server, unmodified, wrapping our no-op policy on 127.0.0.1:``port``."""
    from openpi_server import WebsocketPolicyServer

    from h1_training.policy.scripted import NoopPolicy

    policy = NoopPolicy()
    WebsocketPolicyServer(policy, host="127.0.0.1", port=port, metadata=policy.metadata).serve_forever()


def floor_server_main(port: int, reply_file: str) -> None:
    """Child: a bare websockets server answering every frame with the bytes in ``reply_file`` (the floor)."""
    import asyncio

    from websockets.asyncio.server import serve

    reply = Path(reply_file).read_bytes()

    async def handler(ws: Any) -> None:
        await ws.send(b"metadata")
        async for _ in ws:
            await ws.send(reply)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, max_size=None) as server:
            await server.serve_forever()

    asyncio.run(main())


def _observation(h: int, w: int) -> dict:
    rng = np.random.default_rng(0)
    return {"images": {c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c in CAMERAS},
            "state": np.zeros(14, np.float32), "prompt": "reach the object"}


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _measure(calls: dict, n: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(n):  # interleaved: a load change hits every side alike
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def _case(ports: dict[str, int], h: int, w: int, args: argparse.Namespace) -> dict:
    from openpi_client import msgpack_numpy
    from openpi_client.websocket_client_policy import WebsocketClientPolicy
    from websockets.sync.client import connect

    obs = _observation(h, w)
    ours = WebsocketClientPolicy(f"ws://127.0.0.1:{ports['ours']}/?model=noop")
    calls: dict[str, Any] = {"ours": lambda: ours.infer(obs)}
    if "openpi" in ports:
        openpi = WebsocketClientPolicy("127.0.0.1", ports["openpi"])
        calls["openpi"] = lambda: openpi.infer(obs)
    payload = msgpack_numpy.Packer().pack(obs)
    floor = connect(f"ws://127.0.0.1:{ports['floor']}", compression=None, max_size=None)
    floor.recv()

    def floor_call() -> None:
        floor.send(payload)
        floor.recv()

    calls["floor"] = floor_call
    try:
        times = _measure(calls, args.calls, args.warmup)
    finally:
        floor.close()
    p = {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in times.items()}
    out: dict[str, Any] = {"rtt_p50_ms": round(p["ours"][0], 3), "rtt_p99_ms": round(p["ours"][1], 3),
                           "floor_p50_ms": round(p["floor"][0], 3), "floor_p99_ms": round(p["floor"][1], 3),
                           "observation_mb": round(len(payload) / 1e6, 3), "calls": args.calls}
    if "openpi" in p:
        out.update({"openpi_rtt_p50_ms": round(p["openpi"][0], 3), "openpi_rtt_p99_ms": round(p["openpi"][1], 3),
                    "ratio_p50": round(p["ours"][0] / p["openpi"][0], 3)})
    return out


def run(args: argparse.Namespace) -> dict:
    from openpi_client import msgpack_numpy

    from h1_training.bench.report import Target, evaluate
    from h1_training.bringup import free_port
    from h1_training.procs import ProcessGroup, wait_until

    if args.calls < 100:
        raise SystemExit(f"--calls must be >= 100 (a p99 needs them), got {args.calls}")
    have_openpi = importlib.util.find_spec("openpi_server") is not None
    group = ProcessGroup(echo=None)
    with tempfile.TemporaryDirectory(prefix="bench_policy_loop_") as tmp_name:
        tmp = Path(tmp_name)
        reply = tmp / "reply.msgpack"
        reply.write_bytes(msgpack_numpy.packb({"actions": np.zeros((50, 14), np.float32),
                                               "server_timing": {"infer_ms": 0.0}}))
        ports: dict[str, int] = {"floor": free_port()}
        try:
            group.start_executable("serve", "h1-training", ["serve", "--host", "127.0.0.1", "--port", "0",
                                                            "--models-dir", str(tmp / "models"), "--device", "cpu",
                                                            "--log-level", "WARNING"])
            me = "h1_training.bench.policy_loop"
            group.start("floor", [sys.executable, "-c", f"from {me} import floor_server_main as m; "
                                                        f"m({ports['floor']}, {str(reply)!r})"])
            if have_openpi:
                ports["openpi"] = free_port()
                group.start("openpi", [sys.executable, "-c", f"from {me} import openpi_server_main as m; "
                                                             f"m({ports['openpi']})"])
            line = group.wait_for_line("serve", lambda s: "listening on ws://" in s, timeout=120)
            ports["ours"] = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
            for name in ("floor", "openpi"):
                if name in ports:
                    wait_until(lambda p=ports[name]: _listening(p), 60, f"{name} server on 127.0.0.1:{ports[name]}")
            figures: dict[str, Any] = _case(ports, 224, 224, args)
            figures["vga"] = _case(ports, 480, 640, args)
        finally:
            group.stop()
    figures["inputs"] = {"images": "3 x 224x224 (top level) and 3 x 640x480 (vga)", "calls": args.calls,
                         "warmup": args.warmup, "policy": "no-op (a precomputed 50 x 14 chunk) on every side",
                         "client": "openpi-client (PyPI, unmodified) WebsocketClientPolicy.infer"}
    if not have_openpi:
        figures["openpi_note"] = ("openpi-server is not installed (scripts/setup_env.sh installs it with --no-deps): "
                                  "the openpi side and the ratio were not measured")
    figures["targets"] = evaluate(figures, [Target("ratio_p50", "<=", 0.8), Target("rtt_p50_ms", "<=", 1.0)])
    return figures
