"""The one exponential backoff of the package (reconnects, retries)."""

from __future__ import annotations


class Backoff:
    """Exponential reconnect delay: initial, x2 per failure, capped; reset on success."""

    def __init__(self, initial: float, maximum: float, factor: float = 2.0) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial
