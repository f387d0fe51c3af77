"""The one fixed-rate loop clock of the package (no rclpy): :class:`Ticker`.

Tick ``k`` is due at ``start + k * period`` and owns the slot ``[due_k, due_k + period)``. A wake-up late for
its tick's slot skips the ticks whose slots passed: they are counted (``missed``), never made up for by a burst,
and the loop stays on its time grid. Every hand-rolled ``next_t += period; sleep(next_t - now)`` loop of the
package is one of these::

    ticker = Ticker(50.0)
    while (tick := ticker.wait(stop_event)) is not None:   # None once stop_event is set
        k, missed = tick
        ...one tick of work...

Times are integers in nanoseconds of ``clock`` (``time.monotonic_ns`` by default), so a recorder's tick index is
exact over hours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Ticker:
    """Which tick a wake-up belongs to, how many were missed before it, and the wait for the next one."""

    def __init__(self, rate_hz: float, start_ns: int | None = None, *,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.period_ns = self._period(rate_hz)
        self.start_ns = clock() if start_ns is None else start_ns
        self.index = 0         # next tick not yet claimed
        self.missed = 0        # ticks skipped since the start (all claims together)
        self.late = 0          # claims that skipped at least one tick (late wake-ups)

    @staticmethod
    def _period(rate_hz: float) -> int:
        if not 0 < rate_hz <= 10000:
            raise ValueError(f"rate_hz must be in (0, 10000], got {rate_hz}")
        return int(round(1e9 / rate_hz))

    @property
    def period_s(self) -> float:
        return self.period_ns / 1e9

    def due_ns(self) -> int:
        return self.start_ns + self.index * self.period_ns

    def claim(self, now_ns: int) -> tuple[int, int] | None:
        """None when the next tick is not due yet; else ``(tick, missed)`` — ``missed`` ticks whose slots
        passed without a claim (they are skipped, never filled in)."""
        due = self.due_ns()
        if now_ns < due:
            return None
        missed = int((now_ns - due) // self.period_ns)
        tick = self.index + missed
        self.index = tick + 1
        self.missed += missed
        self.late += missed > 0
        return tick, missed

    def tick_at(self, now_ns: int) -> int:
        """The tick whose slot ``now_ns`` falls in (without claiming it)."""
        return int((now_ns - self.start_ns) // self.period_ns)

    def wait(self, stop: threading.Event | None = None) -> tuple[int, int] | None:
        """Sleep until the next tick is due and claim it: ``(tick, missed)``; None as soon as ``stop`` is set."""
        while True:
            if stop is not None and stop.is_set():
                return None
            now = self.clock()
            claimed = self.claim(now)
            if claimed is not None:
                return claimed
            delay = (self.due_ns() - now) / 1e9
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)

    def restart(self, rate_hz: float | None = None, now_ns: int | None = None) -> None:
        """A new grid from now (after a reconnect, or at another rate); the counts are kept."""
        if rate_hz is not None:
            self.period_ns = self._period(rate_hz)
        self.start_ns = self.clock() if now_ns is None else now_ns
        self.index = 0
