"""Benchmarks (measured, never asserted in tests). Each lives in ``h1_training/bench/<name>.py`` with
``HELP``, ``add_arguments(parser)`` and ``run(args) -> dict``; this command checks the figures' ``targets``
(``{name: bool}``, computed by the bench against its figures: ``bench.report.Target`` / ``evaluate``), adds the
machine they were measured on, prints them, and exits 1 when a target is missed or the bench crashed
(``--no-fail``: print and exit 0, for exploration). A target that is not ``True`` (``None``: not measured) is
missed. A bench should also report ``inputs`` (sizes of what it fed) and ``peak_rss_mb`` where memory matters.

    h1-training bench hardware --json      # lowcmd rate/jitter, joint_states rate, CPU per process
    h1-training bench recorder --seconds 60 --json
    h1-training bench convert --json
    h1-training bench serve --json
    h1-training bench ab --json            # sequential A/B test vs the exact fixed design (seeded simulation)
    h1-training bench datasets --json      # catalog refresh of 1,000 episodes, playback timing
    h1-training bench web --json           # page load and ROS -> page latency in chromium
    h1-training bench demo --json          # the learning demo: success per HIL epoch on fresh seeded episodes
    h1-training bench recorder-kill --runs 20 --json   # kill -9 of the recorder at random moments, repaired
    h1-training bench soak --minutes 60 --json         # the whole sim stack with faults on a seeded schedule
    h1-training bench all --json > bench.json && python scripts/bench_table.py bench.json   # README table
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
import traceback

HELP = ("run a benchmark, check its targets and print its figures (hardware, recorder, convert, serve, ab, datasets, "
        "foxglove, web, demo, train, diffusion, policy-loop, recorder-kill, soak, all)")
BENCHES = ("hardware", "recorder", "convert", "serve", "ab", "datasets", "foxglove", "web", "demo", "train",
           "diffusion", "policy-loop")
# long reliability benches (minutes to an hour): by name only, not in `bench all`
RELIABILITY_BENCHES = ("recorder-kill", "soak")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object (figures, targets, machine)")
    p.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed (exploration)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCHES + RELIABILITY_BENCHES:
        try:
            module = importlib.import_module(f"h1_training.bench.{name.replace('-', '_')}")
        except ImportError as exc:
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(_bench_unavailable=str(exc))
            continue
        # "resolve": a bench may declare --json / --no-fail itself (the same meaning) without a clash
        p = sub.add_parser(name, help=module.HELP, conflict_handler="resolve")
        _common(p)
        module.add_arguments(p)
        # a benchmark with targets may say how to exit (exit_code(figures, args)); the others exit 0
        p.set_defaults(_bench=module.run, _bench_exit=getattr(module, "exit_code", None))
    p = sub.add_parser("all", help="run every benchmark with its defaults")
    _common(p)
    p.set_defaults(_bench=None)


def _print(name: str, figures: dict) -> None:
    print(f"== bench {name}")
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"  {key}:")
            for k, v in value.items():
                print(f"    {k:<40} {v}")
        else:
            print(f"  {key:<30} {value}")


def _finish(figures: dict, started: float, load_at_start: list[float]) -> dict:
    from h1_training.bench.report import machine, missed

    figures.setdefault("targets", {})
    figures["machine"] = machine()  # its loadavg: when the bench ended
    figures["machine"]["loadavg_at_start"] = load_at_start
    figures["bench_wall_s"] = round(time.monotonic() - started, 1)
    figures["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    figures["missed_targets"] = missed(figures)
    return figures


def _run_one(name: str, fn, args: argparse.Namespace) -> dict:
    started = time.monotonic()
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    try:
        # stdout carries the figures (--json: one JSON document); what the bench and its libraries print while it
        # runs (LeRobot's "Loading weights from local directory", progress lines) goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            figures = fn(args)
    except Exception as exc:  # noqa: BLE001 - a bench that crashes is reported as a missed target, not hidden
        traceback.print_exc(file=sys.stderr)
        figures = {"error": f"{type(exc).__name__}: {exc}", "targets": {"bench completed": False}}
    return _finish(figures, started, load_at_start)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_bench_unavailable", None):
        print(f"bench {args.bench}: {args._bench_unavailable}", file=sys.stderr)
        return 2
    if not getattr(args, "bench", None):
        print("usage: h1-training bench {" + ",".join(BENCHES) + ",all} [--json] [--no-fail]", file=sys.stderr)
        return 2
    if args.bench != "all":
        figures = _run_one(args.bench, args._bench, args)
        results = {args.bench: figures}
        if args.json:
            print(json.dumps(figures, indent=2, sort_keys=True, default=str))
        else:
            _print(args.bench, figures)
    else:
        results = {}
        for name in BENCHES:
            module = importlib.import_module(f"h1_training.bench.{name.replace('-', '_')}")
            parser = argparse.ArgumentParser()
            module.add_arguments(parser)
            results[name] = _run_one(name, module.run, parser.parse_args([]))
            if not args.json:
                _print(name, results[name])
        if args.json:
            print(json.dumps(results, indent=2, sort_keys=True, default=str))
    return exit_status(results, args.no_fail)


def exit_status(results: dict[str, dict], no_fail: bool) -> int:
    """1 when a bench of ``results`` ({name: finished figures}) missed a target (each is named on stderr), else 0;
    ``no_fail``: always 0 (exploration)."""
    misses = [f"{name}: {t}" for name, figures in results.items() for t in figures["missed_targets"]]
    for line in misses:
        print(f"bench: target missed: {line}", file=sys.stderr)
    return 1 if misses and not no_fail else 0
