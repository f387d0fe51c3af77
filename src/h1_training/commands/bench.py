"""Benchmarks (measured, never asserted in tests). Each lives in ``h1_training/bench/<name>.py`` with
``HELP``, ``add_arguments(parser)`` and ``run(args) -> dict``; this command prints the figures.

    h1-training bench hardware --json      # lowcmd rate/jitter, joint_states rate, CPU per process
    h1-training bench recorder --seconds 60 --json
    h1-training bench convert --json
    h1-training bench serve --json
    h1-training bench all                  # every benchmark with default settings
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

HELP = "run a benchmark and print its figures (hardware, recorder, convert, serve, all)"
BENCHES = ("hardware", "recorder", "convert", "serve", "demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    for name in BENCHES:
        try:
            module = importlib.import_module(f"h1_training.bench.{name}")
        except ImportError as exc:
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(_bench_unavailable=str(exc))
            continue
        p = sub.add_parser(name, help=module.HELP)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(p)
        p.set_defaults(_bench=module.run)
    p = sub.add_parser("all", help="run every benchmark with its defaults")
    p.add_argument("--json", action="store_true")
    p.set_defaults(_bench=None)


def _print(name: str, figures: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures, indent=2, sort_keys=True, default=str))
        return
    print(f"== bench {name}")
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"  {key}:")
            for k, v in value.items():
                print(f"    {k:<28} {v}")
        else:
            print(f"  {key:<30} {value}")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_bench_unavailable", None):
        print(f"bench {args.bench}: {args._bench_unavailable}", file=sys.stderr)
        return 2
    if not getattr(args, "bench", None):
        print("usage: h1-training bench {" + ",".join(BENCHES) + ",all} [--json]", file=sys.stderr)
        return 2
    if args.bench != "all":
        _print(args.bench, args._bench(args), args.json)
        return 0
    results = {}
    for name in BENCHES:
        module = importlib.import_module(f"h1_training.bench.{name}")
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        results[name] = module.run(parser.parse_args([]))
        if not args.json:
            _print(name, results[name], False)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True, default=str))
    return 0
