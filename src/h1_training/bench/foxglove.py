"""Foxglove gateway cost: the recorder's 50 Hz with and without a Foxglove client subscribed to every channel.

Runs the recorder benchmark (sim profile, which includes ``foxglove_gateway``) twice: first with no client
connected (the gateway idle: nothing subscribed, nothing serialised), then with a foxglove.sdk.v1 client
subscribed to every advertised channel (joint and hand states, the three cameras at ``camera_rate_hz``,
diagnostics, status topics). Reports the recorder's figures for both, the gateway's CPU and what the client got.

    h1-training bench foxglove --seconds 30 --json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from h1_training.bench.foxglove_client import FoxgloveCountingClient

HELP = "foxglove_gateway: recorder 50 Hz with and without a Foxglove client on every channel, gateway CPU"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=30.0, help="episode length per run (default 30)")


def _gateway_url(group: Any) -> str:
    line = group.wait_for_line("foxglove_gateway", lambda s: "listening on ws://" in s, timeout=60)
    return line.rsplit(" ", 1)[1]


def run(args: argparse.Namespace) -> dict:
    import psutil

    from h1_training.bench import recorder

    results: dict[str, Any] = {}
    for label, with_client in (("no_client", False), ("client_on_every_channel", True)):
        state: dict[str, Any] = {}

        def during(group: Any, with_client: bool = with_client, state: dict = state) -> Any:
            gateway = psutil.Process(group.get("foxglove_gateway").proc.pid)
            client = FoxgloveCountingClient(_gateway_url(group)) if with_client else None
            t0, cpu0 = time.monotonic(), sum(gateway.cpu_times()[:2])

            def finish() -> dict:
                seconds = time.monotonic() - t0
                cpu = sum(gateway.cpu_times()[:2]) - cpu0
                out: dict[str, Any] = {"gateway_cpu_pct": round(100.0 * cpu / seconds, 1)}
                if client is not None:
                    client.close()
                    out["client_msgs_per_s"] = {t: round(n / seconds, 1) for t, n in sorted(client.messages.items())}
                    out["client_mb_per_s"] = round(client.bytes / seconds / 1e6, 2)
                return out
            return finish

        # the recorder bench's own defaults (one place), with the sim feed and this bench's client as the load
        parser = argparse.ArgumentParser()
        recorder.add_arguments(parser)
        run_args = parser.parse_args(["--seconds", str(args.seconds), "--feed", "sim"])
        run_args.during = during
        figures = recorder.run(run_args)
        results[label] = {k: figures[k] for k in ("mean_hz", "p99_period_ms", "missed_ticks", "cpu_pct",
                                                  "gateway_cpu_pct", "client_msgs_per_s", "client_mb_per_s")
                          if k in figures}
    results["seconds"] = args.seconds
    return results
