"""How long Python's cyclic garbage collector stops a process's interpreter (no rclpy).

A fixed-rate thread (the recorder's 50 Hz sampler) cannot run while the collector runs: it holds the interpreter
lock, whichever thread triggered it, and a collection of the oldest generation walks every tracked object of the
process. :class:`GcPauses` times each collection through ``gc.callbacks`` so a late tick can be put next to the
collections of the same stretch of time (the recorder logs them with each saved episode).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class GcSummary:
    """The collections of one window (since the last :meth:`GcPauses.take`)."""

    collections: int = 0
    total_ms: float = 0.0
    longest_ms: float = 0.0
    longest_generation: int = -1
    over_10ms: int = 0  # collections long enough to make a 50 Hz tick late by half a period

    def describe(self) -> str:
        if not self.collections:
            return "no garbage collection"
        return (f"{self.collections} garbage collections, {self.total_ms:.0f} ms in all, longest "
                f"{self.longest_ms:.1f} ms (generation {self.longest_generation}), {self.over_10ms} over 10 ms")


class GcPauses:
    """Install once per process; :meth:`take` returns the window's summary and starts the next one.

    The callback runs inside the collection, in whichever thread triggered it: it takes no lock (a lock held by
    a thread that allocates could be wanted by the collection that allocation triggers) and only rebinds or
    updates the current window's summary, which :meth:`take` swaps for a fresh one in one assignment."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started: float | None = None
        self._window = GcSummary()
        self._installed = False

    def install(self) -> GcPauses:
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._on_gc)
            self._installed = False

    def take(self) -> GcSummary:
        window, self._window = self._window, GcSummary()
        return window

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        if self._started is None:  # installed in the middle of a collection
            return
        ms = (self._clock() - self._started) * 1e3
        self._started = None
        w = self._window
        w.collections += 1
        w.total_ms += ms
        if ms > 10.0:
            w.over_10ms += 1
        if ms > w.longest_ms:
            w.longest_ms, w.longest_generation = ms, int(info.get("generation", -1))
