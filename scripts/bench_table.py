#!/usr/bin/env python3
"""The README's benchmark table, generated from ``h1-training bench --json`` output (no hand-typed figures).

    h1-training bench all --json --no-fail > bench.json
    python scripts/bench_table.py bench.json                 # print the table
    python scripts/bench_table.py bench.json --readme README.md   # replace the table between its markers

    # one file per bench, kept in docs/bench/ so a bench can be re-measured alone when its code changes:
    h1-training bench web --json --no-fail > docs/bench/web.json
    python scripts/bench_table.py docs/bench/*.json --readme README.md

Each file is either ``bench all``'s ``{bench: figures}`` or one bench's figures (named by the file's stem); later
files replace earlier ones' benches.

The table goes between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->``. Every figure comes from the
JSON: each bench's targets (met or missed, with the figure they test), its headline figures, its inputs, and a
caption with the date, the machine (CPU, cores, memory, load average when each bench started) and the commit.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"

# headline figures per bench (dotted keys into its figures), shown besides the targets
HEADLINES: dict[str, list[str]] = {
    "hardware": ["lowcmd_hz", "lowcmd_p99_period_ms", "joint_states_hz", "cpu_pct_total", "cpu_pct"],
    "recorder": ["mean_hz", "p99_period_ms", "missed_ticks", "save_s", "file_mb", "jpeg_kb", "cpu_pct",
                 "peak_rss_mb"],
    "convert": ["convert_frames_per_s", "lerobot_plain_frames_per_s", "ratio", "cpu_ratio", "cpu_cores_busy",
                "peak_rss_mb", "profile.cpu_share", "profile.cpu_ms_per_frame", "profile_plain.ms_per_frame"],
    "ab": ["scenarios.p50_vs_p80.fixed_n", "scenarios.p50_vs_p80.asn_reduction_pct", "scenarios.p50_vs_p80.power",
           "scenarios.p30_vs_p50.fixed_n", "scenarios.p30_vs_p50.asn_reduction_pct", "scenarios.p30_vs_p50.power",
           "false_positive_rate", "false_positive_rate_se", "h0_asn_fraction_of_cap",
           "partial_credit_checkpoints.binary_asn_per_arm", "partial_credit_checkpoints.score_asn_per_arm",
           "partial_credit_checkpoints.score_saving_pct", "partial_credit.score_saving_pct"],
    "datasets": ["refresh_1000_s", "refresh_1000_cpu_s", "incremental_refresh_s", "restart_refresh_s",
                 "playback_rate_hz", "playback_skipped"],
    "web": ["load_s", "update_latency_ms"],
    "foxglove": ["no_client.mean_hz", "no_client.missed_ticks", "no_client.gateway_cpu_pct",
                 "client_on_every_channel.mean_hz", "client_on_every_channel.missed_ticks",
                 "client_on_every_channel.gateway_cpu_pct", "client_on_every_channel.client_mb_per_s"],
    "policy-loop": ["rtt_p50_ms", "rtt_p99_ms", "openpi_rtt_p50_ms", "openpi_rtt_p99_ms", "ratio_p50", "floor_p50_ms",
                    "vga.rtt_p50_ms", "vga.openpi_rtt_p50_ms", "vga.ratio_p50", "vga.floor_p50_ms",
                    "max_chunk_boundary_jump_rad_unblended", "slow_model.held_ticks", "slow_model.chunk_switches",
                    "vga.where_the_time_goes"],
    "recorder-full-stack": ["full_stack.max_period_ms", "full_stack.frames", "full_stack.session_failures",
                            "full_stack_cpu_load.max_period_ms", "full_stack_cpu_load.frames",
                            "full_stack_cpu_load.session_failures"],
    "recorder-kill": ["mean_samples_lost_s"],
    "demo": [f"runs.{i}.{key}" for i in range(3)  # the README's three seeds
             for key in ("first_success", "last_success", "ab_p_value", "wall_s")],
    "serve": ["latency_p50_ms", "latency_p99_ms", "requests", "held_tick_share", "train_steps_per_s",
              "peak_rss_mb"],
    "train": ["train_steps_per_s", "lerobot_train_steps_per_s", "ratio", "data_share", "peak_rss_mb"],
    "diffusion": ["ddim10_p50_ms", "ddpm100_p50_ms", "speedup", "action_gap", "action_spread"],
}
_TARGET = re.compile(r"^(?P<figure>\S+) (?P<rest>(within|<=|>=|<|>|==) .*)$")


def lookup(figures: dict[str, Any], dotted: str) -> Any:
    value: Any = figures
    for part in dotted.split("."):
        if isinstance(value, list) and part.isdigit():  # "runs.0.wall_s": the first run's
            if int(part) >= len(value):
                return None
            value = value[int(part)]
            continue
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| bench | figure | value | target | met |", "|---|---|---|---|---|"]
    for name, figures in results.items():
        label = f"`{name}`"
        inputs = figures.get("inputs")
        if inputs:
            label += f" ({fmt(inputs)})"
        if figures.get("error"):
            rows.append(f"| {label} | error | {figures['error']} | runs to the end | **no** |")
            label = ""
        shown = set()
        for target, met in (figures.get("targets") or {}).items():
            m = _TARGET.match(target)
            figure = m.group("figure") if m else target
            rows.append(f"| {label} | `{figure}` | {fmt(lookup(figures, figure))} | "
                        f"{m.group('rest') if m else target} | {'yes' if met is True else '**no**'} |")
            shown.add(figure)
            label = ""
        for key in HEADLINES.get(name, []):
            if key in shown or lookup(figures, key) is None:
                continue
            rows.append(f"| {label} | `{key}` | {fmt(lookup(figures, key))} | | |")
            label = ""
    return "\n".join(rows)


def caption(results: dict[str, dict[str, Any]]) -> str:
    first = next(iter(results.values()))
    m = first.get("machine") or {}
    started = all("loadavg_at_start" in (f.get("machine") or {}) for f in results.values())
    key, when_load = ("loadavg_at_start", "started") if started else ("loadavg", "ended")
    loads = ", ".join(f"{name} {fmt(((f.get('machine') or {}).get(key) or [None])[0])}"
                      for name, f in results.items())
    dates = sorted(f.get("date", "") for f in results.values() if f.get("date"))
    commits = ", ".join(f"{name} {(f.get('machine') or {}).get('h1_training_commit', '?')}"
                        for name, f in results.items())
    when = dates[0][:16].replace("T", " ") if dates else "unknown date"
    return (f"Measured from {when} (UTC) by `h1-training bench NAME --json` on {m.get('cpu_model', '?')}, "
            f"{m.get('cpus', '?')} CPUs, {m.get('memory_gb', '?')} GB, {m.get('platform', '?')}, Python "
            f"{m.get('python', '?')}, torch {(m.get('versions') or {}).get('torch', '?')}; commit per bench: "
            f"{commits}. 1-minute load average when each bench {when_load}: {loads} "
            f"(the machine has {m.get('cpus', '?')} cores: above that, other work competed for them). "
            f"Generated by `scripts/bench_table.py`; do not edit by hand.")


def render(results: dict[str, dict[str, Any]]) -> str:
    return f"{caption(results)}\n\n{table(results)}\n"


def load(path: Path) -> dict[str, dict[str, Any]] | None:
    """``{bench: figures}`` from one file: ``bench all``'s document, or one bench's (named by the file's stem)."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        return None
    if "machine" in data or "targets" in data:
        return {path.stem: data}
    if not all(isinstance(v, dict) for v in data.values()):
        return None
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", type=Path, nargs="+", help="outputs of `h1-training bench [all|NAME] --json`")
    ap.add_argument("--readme", type=Path, help="replace the table between the markers in this file")
    args = ap.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for path in args.json:
        loaded = load(path)
        if loaded is None:
            print(f"{path}: expected {{bench: figures}} from `h1-training bench all --json` or one bench's "
                  "figures", file=sys.stderr)
            return 2
        results.update(loaded)
    text = render(results)
    if not args.readme:
        print(text)
        return 0
    readme = args.readme.read_text()
    if START not in readme or END not in readme:
        print(f"{args.readme}: markers {START} / {END} not found", file=sys.stderr)
        return 2
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{text}{END}{tail}")
    print(f"{args.readme}: benchmark table replaced ({len(results)} benches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
