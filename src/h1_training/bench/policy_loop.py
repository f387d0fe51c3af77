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

(b) The HIL session's policy loop (``session/policy_loop.py``, with the session's own settings: 50 Hz, next chunk
after 25 rows, ``blend_steps``) against ``h1-training serve --infer-delay-ms 100`` (its own process; the scripted
reach model, 50-row chunks, each inference 100 ms slower) through our ``PolicyClient``. The targets it publishes
go to a bench arm: the project's safety layer (``ArmSafety.check_command``, then ``limit_step`` at 2 rad/s on the
driver's 250 Hz write ticks) and joints that follow the clamped setpoint with a first-order lag (50 ms), whose
position is the next observation's state, so a new chunk is planned from a pose that trails the commands, as on
the robot. Episodes from the home pose, blended (the session's ``blend_steps``) and unblended (0) alternating:
``slow_model_missed_ticks`` (grid ticks skipped, blended episodes), ``slow_model_command_hz`` (published targets
per second), ``max_chunk_boundary_jump_rad`` (largest per-tick change of a published target, any joint, from a
switch to the end of its blend; ``..._unblended`` the same without the blend). Targets: 0 missed, 50 Hz +- 1 %,
jump <= 2 rad/s / 50 Hz = 0.04 rad (the arm's velocity limit per tick). The scripted reach replans consistently
(its chunks agree at a switch within about a millimetre-radian even unblended), so the blended figure is mostly
the reach's own cruise step inside the blend window (0.6 rad/s = 0.012 rad a tick; ``slow_model.max_step_rad``
is the largest step anywhere); what the blend does to chunks that disagree is shown by ``test_policy_loop.py``
(0.3 rad between chunks arrives as ten steps of 0.03 rad).
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
    parser.add_argument("--slow-episodes", type=int, default=3,
                        help="(b): episodes with the 100 ms model, each blended and unblended (0: skip (b))")
    parser.add_argument("--slow-episode-s", type=float, default=4.0, help="(b): seconds per episode")


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


def _stage_ms(fn: Any, reps: int = 200) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 4)


def where_the_time_goes(obs: dict, rtt_ms: float, floor_ms: float) -> dict:
    """The round trip's stages, each timed alone in this process (median of 200) on the same observation: what
    the client and our server compute around the wire; ``wire_ms`` is the floor (the same bytes through a bare
    WebSocket server: both frames, the TCP loopback, websockets' buffering and unmasking)."""
    from openpi_client import msgpack_numpy

    from h1_training.policy import codec
    from h1_training.policy.obs import check_observation, check_result
    from h1_training.policy.scripted import NoopPolicy, ScriptedPolicy

    packer, ours, noop, scripted = msgpack_numpy.Packer(), codec.Packer(), NoopPolicy(), ScriptedPolicy()
    payload = packer.pack(obs)
    decoded = codec.unpackb(payload)
    result = {**scripted.infer(decoded), "server_timing": {"infer_ms": 0.1}, "model_id": "scripted",
              "model_epoch": 0}
    reply = ours.pack(result)
    stages = {
        "client_pack_ms": _stage_ms(lambda: packer.pack(obs)),
        "server_unpack_ms": _stage_ms(lambda: codec.unpackb(payload)),
        "server_checks_ms": _stage_ms(lambda: check_result(check_observation(decoded) and noop.infer(decoded))),
        "noop_infer_ms": _stage_ms(lambda: noop.infer(decoded)),
        "scripted_infer_ms": _stage_ms(lambda: scripted.infer(decoded)),
        "server_pack_ms": _stage_ms(lambda: ours.pack(result)),
        "client_unpack_ms": _stage_ms(lambda: msgpack_numpy.unpackb(reply)),
        "wire_ms": round(floor_ms, 4),
    }
    computed = sum(v for k, v in stages.items() if k != "scripted_infer_ms")
    stages["rest_ms"] = round(rtt_ms - computed, 4)  # scheduling, the event loop's dispatch, noise
    return stages


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
    out["where_the_time_goes"] = where_the_time_goes(obs, p["ours"][0], p["floor"][0])
    if "openpi" in p:
        out.update({"openpi_rtt_p50_ms": round(p["openpi"][0], 3), "openpi_rtt_p99_ms": round(p["openpi"][1], 3),
                    "ratio_p50": round(p["ours"][0] / p["openpi"][0], 3)})
    return out


SLOW_MODEL_MS = 100.0
ARM_LAG_S = 0.05


class BenchArm:
    """(b)'s arm: every published target through the safety layer at the driver's write rate, joints lagging."""

    def __init__(self, q0: np.ndarray, rate_hz: float, write_hz: float = 250.0) -> None:
        import threading

        from h1_training.drivers.arm_safety import ArmSafety

        self.safety = ArmSafety()
        self.setpoint = np.asarray(q0, np.float64).copy()
        self.q = self.setpoint.copy()
        self.substeps = max(int(round(write_hz / rate_hz)), 1)
        self.dt = 1.0 / (rate_hz * self.substeps)
        self.follow = 1.0 - float(np.exp(-self.dt / ARM_LAG_S))
        self.times: list[float] = []
        self._lock = threading.Lock()

    def publish(self, row: np.ndarray, model_version: str, proposal: bool) -> None:  # noqa: ARG002
        now = time.monotonic()
        goal, _ = self.safety.check_command(row, now)
        with self._lock:
            for _ in range(self.substeps):
                self.setpoint = self.safety.limit_step(self.setpoint, goal, self.dt)
                self.q = self.q + self.follow * (self.setpoint - self.q)
            self.times.append(now)

    def observe(self) -> dict:
        with self._lock:
            return {"state": self.q.astype(np.float32), "prompt": "reach the object"}


def _slow_episode(port: int, blend_steps: int, seconds: float) -> dict:
    from h1_training.policy.client import PolicyClient
    from h1_training.robot_model import ARM_HOME_RAD
    from h1_training.session.policy_loop import PolicyLoop
    from h1_training.session.settings import SessionSettings

    s = SessionSettings()
    arm = BenchArm(np.asarray(ARM_HOME_RAD), s.control_rate_hz)
    failures: list[str] = []
    loop = PolicyLoop(PolicyClient("127.0.0.1", port, request_timeout=s.inference_timeout_s), arm.observe,
                      arm.publish, failures.append, rate_hz=s.control_rate_hz, replan_steps=s.replan_steps,
                      max_chunk_rows=s.max_chunk_rows, skip_elapsed_rows=s.skip_elapsed_rows,
                      blend_steps=blend_steps)
    loop.start()
    time.sleep(seconds)
    loop.stop()
    if failures:
        raise RuntimeError(f"the policy loop failed against the slow model: {failures[0]}")
    st = loop.stats
    times = arm.times
    return {"ticks": st.ticks, "missed": st.missed_ticks, "late": st.late_ticks, "held": st.held_ticks,
            "switches": st.chunk_switches, "jump": st.max_boundary_step_rad, "max_step": st.max_step_rad,
            "infer_ms_max": st.infer_ms_max, "span_s": times[-1] - times[0] if len(times) > 1 else 0.0,
            "velocity_limited_writes": arm.safety.counters.velocity_limited_ticks}


def _slow_model(port: int, args: argparse.Namespace) -> dict:
    from h1_training.session.settings import SessionSettings

    blend = SessionSettings().blend_steps
    runs: dict[str, list[dict]] = {"blended": [], "unblended": []}
    for _ in range(args.slow_episodes):  # alternating: a load change hits both alike
        runs["blended"].append(_slow_episode(port, blend, args.slow_episode_s))
        runs["unblended"].append(_slow_episode(port, 0, args.slow_episode_s))

    def total(name: str, key: str) -> float:
        return sum(r[key] for r in runs[name])

    def hz(name: str) -> float:
        return sum(r["ticks"] - 1 for r in runs[name]) / total(name, "span_s")

    return {
        "slow_model_missed_ticks": int(total("blended", "missed")),
        "slow_model_command_hz": round(hz("blended"), 3),
        "max_chunk_boundary_jump_rad": round(max(r["jump"] for r in runs["blended"]), 4),
        "max_chunk_boundary_jump_rad_unblended": round(max(r["jump"] for r in runs["unblended"]), 4),
        "slow_model": {
            "infer_delay_ms": SLOW_MODEL_MS, "episodes": args.slow_episodes, "episode_s": args.slow_episode_s,
            "blend": f"linear over the overlap, {blend} ticks (session blend_steps)",
            "ticks": int(total("blended", "ticks")), "late_ticks": int(total("blended", "late")),
            "held_ticks": int(total("blended", "held")), "chunk_switches": int(total("blended", "switches")),
            "infer_ms_max": round(max(r["infer_ms_max"] for r in runs["blended"]), 1),
            "max_step_rad": round(max(r["max_step"] for r in runs["blended"]), 4),
            "unblended_missed_ticks": int(total("unblended", "missed")),
            "unblended_command_hz": round(hz("unblended"), 3),
            "unblended_chunk_switches": int(total("unblended", "switches")),
            "unblended_max_step_rad": round(max(r["max_step"] for r in runs["unblended"]), 4),
            "velocity_limited_writes": {k: int(total(k, "velocity_limited_writes")) for k in runs},
        },
    }


def run(args: argparse.Namespace) -> dict:
    from openpi_client import msgpack_numpy

    from h1_training.bench.report import Target, evaluate
    from h1_training.bringup import free_port
    from h1_training.procs import ProcessGroup, wait_until

    if args.calls < 100:
        raise SystemExit(f"--calls must be >= 100 (a p99 needs them), got {args.calls}")
    if args.slow_episodes < 0 or not args.slow_episode_s >= 1.0:
        raise SystemExit("--slow-episodes must be >= 0 and --slow-episode-s >= 1")
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
            if args.slow_episodes > 0:
                group.start_executable("serve-slow", "h1-training", [
                    "serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu", "--log-level", "WARNING",
                    "--infer-delay-ms", f"{SLOW_MODEL_MS:g}"])
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
            if args.slow_episodes > 0:
                line = group.wait_for_line("serve-slow", lambda s: "listening on ws://" in s, timeout=120)
                figures.update(_slow_model(int(line.rsplit(":", 1)[1].strip().rstrip("/")), args))
        finally:
            group.stop()
    figures["inputs"] = {"images": "3 x 224x224 (top level) and 3 x 640x480 (vga)", "calls": args.calls,
                         "warmup": args.warmup, "policy": "no-op (a precomputed 50 x 14 chunk) on every side",
                         "client": "openpi-client (PyPI, unmodified) WebsocketClientPolicy.infer"}
    if not have_openpi:
        figures["openpi_note"] = ("openpi-server is not installed (scripts/setup_env.sh installs it with --no-deps): "
                                  "the openpi side and the ratio were not measured")
    targets = [Target("ratio_p50", "<=", 0.8), Target("rtt_p50_ms", "<=", 1.0)]
    if args.slow_episodes > 0:
        targets += [Target("slow_model_missed_ticks", "==", 0), Target("slow_model_command_hz", "within", 50.0, 0.5),
                    Target("max_chunk_boundary_jump_rad", "<=", 0.04)]
    figures["targets"] = evaluate(figures, targets)
    return figures
