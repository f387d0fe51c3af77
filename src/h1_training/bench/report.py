"""What every benchmark reports besides its figures: targets checked as booleans, the machine it ran on, and
peak memory read from the operating system.

A target is a comparison of one figure with a limit (``Target("mean_hz", "within", 50, tol=0.25)``); a figure
that is missing (not measured) misses its target. ``h1-training bench`` exits non-zero when any target is missed
(``--no-fail`` for exploration).
"""

from __future__ import annotations

import numbers
import os
import platform
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h1_training import procs

_OPS = ("<=", ">=", "<", ">", "==", "within")


@dataclass(frozen=True)
class Target:
    figure: str            # key of the figures dict; dotted for nested dicts ("latency_p99_ms.noop")
    op: str                # one of _OPS
    limit: float
    tol: float = 0.0       # for "within": |value - limit| <= tol

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"target op must be one of {_OPS}, got {self.op!r}")

    @property
    def name(self) -> str:
        if self.op == "within":
            return f"{self.figure} within {self.limit:g} +- {self.tol:g}"
        return f"{self.figure} {self.op} {self.limit:g}"

    def met(self, figures: dict[str, Any]) -> bool:
        value = lookup(figures, self.figure)
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or value != value:
            return False  # not measured (None), or NaN: a target is met only by a figure
        value = float(value)
        if self.op == "within":
            return bool(abs(value - self.limit) <= self.tol)
        return bool({"<=": value <= self.limit, ">=": value >= self.limit, "<": value < self.limit,
                     ">": value > self.limit, "==": value == self.limit}[self.op])


def lookup(figures: dict[str, Any], dotted: str) -> Any:
    value: Any = figures
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def evaluate(figures: dict[str, Any], targets: list[Target]) -> dict[str, bool]:
    """``{target name: met}`` for ``figures["targets"]``."""
    return {t.name: t.met(figures) for t in targets}


def missed(figures: dict[str, Any]) -> list[str]:
    """Names of the targets a bench's figures miss (``targets`` values that are not ``True``)."""
    return [name for name, ok in (figures.get("targets") or {}).items() if ok is not True]


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[3]
    lines: list[str] = []
    try:
        result = procs.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], on_line=lines.append,
                           timeout_s=5)
    except OSError:  # no git
        return None
    return lines[0].strip() if result.rc == 0 and lines and lines[0].strip() else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: CPUs, load, memory, software versions."""
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:
        mem_gb = None
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": mem_gb,
        "loadavg": [round(v, 2) for v in load],
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("numpy", "torch", "lerobot", "opencv-python-headless", "av", "h5py", "openpi-client",
                      "pyzmq", "pymodbus")},
        "h1_training_commit": _git_commit(),
    }


# --- memory ------------------------------------------------------------------------------------------------------
def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set of a live process over its whole life (VmHWM, kept by the kernel, not sampled)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def self_peak_rss_mb() -> float:
    """Peak resident set of this process (getrusage: kB on Linux)."""
    scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, 1)


def process_role(proc) -> str:
    """What a Python child is, from its command line: multiprocessing's ``resource_tracker``, a ``spawn``ed
    worker (the recorder's HDF5 writer), else its executable name."""
    import psutil

    try:
        cmd = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "gone"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "spawn_main" in cmd:
        return "spawned"
    return name


def size_arg(text: str) -> tuple[int, int]:
    """argparse type for an image size ``WxH`` (the benches' --camera-size, --resize, --train-size, and
    ``h1-training convert --resize``)."""
    import argparse

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 320x240, got {text!r}") from exc
    return w, h


def torch_threads() -> int:
    """torch's intra-op threads in this process (an input of the benches that run models)."""
    import torch

    return torch.get_num_threads()
