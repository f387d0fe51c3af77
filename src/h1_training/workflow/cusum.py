"""Bernoulli CUSUM on the stream of labelled outcomes of the deployed model (failure = 1).

The chart (Reynolds & Stoumbos 1999, "A CUSUM chart for monitoring a proportion when inspecting continuously",
J. Quality Technology 31:87) tests, after every trial, "the failure rate moved from ``p0`` to ``p1``" with the
log-likelihood-ratio increments

    failure: ln(p1 / p0)          success: ln((1 - p1) / (1 - p0))

and ``S_t = max(0, S_{t-1} + w_t)``; it alarms when ``S_t >= h``. ``p0`` is the failure rate measured right after
deployment (the baseline window), ``p1`` the rate it should notice (``p0`` with its odds multiplied by
``odds_ratio``, 2 by default). The threshold ``h`` is chosen for a stated in-control average run length
(ARL0, trials between false alarms when nothing changed; 500 by default) by simulation: bisection on ``h`` with
common random numbers (:func:`calibrate_threshold`), checked by an independent simulation
(:func:`simulate_arl`, used by the tests). No normal approximation is involved, which matters at the small ``p0``
of a good policy where the chart's run-length distribution is far from normal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def shifted_rate(p0: float, odds_ratio: float) -> float:
    """The failure rate whose odds are ``odds_ratio`` times those of ``p0``."""
    odds = p0 / (1.0 - p0) * odds_ratio
    return odds / (1.0 + odds)


def increments(p0: float, p1: float) -> tuple[float, float]:
    """(w for a failure, w for a success) of the Bernoulli CUSUM."""
    if not (0.0 < p0 < 1.0 and 0.0 < p1 < 1.0) or p1 <= p0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def run_lengths(p: float, w_fail: float, w_ok: float, h: float, runs: int, rng: np.random.Generator,
                max_len: int = 1_000_000) -> np.ndarray:
    """Run lengths (trials until S >= h) of ``runs`` independent charts fed Bernoulli(p) failures; vectorised.
    Runs still going at ``max_len`` are censored there."""
    s = np.zeros(runs)
    length = np.zeros(runs, dtype=np.int64)
    active = np.arange(runs)
    t = 0
    while active.size and t < max_len:
        t += 1
        fail = rng.random(active.size) < p
        s[active] = np.maximum(0.0, s[active] + np.where(fail, w_fail, w_ok))
        hit = s[active] >= h
        length[active[hit]] = t
        active = active[~hit]
    length[active] = max_len
    return length


def simulate_arl(p0: float, p1: float, h: float, runs: int = 4000, seed: int = 1, p_true: float | None = None) -> float:
    """Mean run length of the chart when the true failure rate is ``p_true`` (default ``p0``: the ARL0)."""
    w_fail, w_ok = increments(p0, p1)
    lengths = run_lengths(p0 if p_true is None else p_true, w_fail, w_ok, h, runs, np.random.default_rng(seed))
    return float(lengths.mean())


def calibrate_threshold(p0: float, p1: float, arl0: float = 500.0, runs: int = 3000, seed: int = 0,
                        iterations: int = 18) -> float:
    """The smallest ``h`` whose simulated in-control ARL reaches ``arl0`` (bisection, common random numbers).

    The ARL of a Bernoulli CUSUM is a step function of ``h`` (the chart moves in fixed increments), so the result
    is the start of the step that first reaches ``arl0``; the achieved ARL0 can lie somewhat above it."""
    if arl0 < 2:
        raise ValueError(f"arl0 must be >= 2, got {arl0}")
    w_fail, w_ok = increments(p0, p1)
    # one bank of uniforms shared by every candidate h: the ARL estimate is then monotone in h
    max_len = int(arl0 * 30)

    def arl(h: float) -> float:
        return float(run_lengths(p0, w_fail, w_ok, h, runs, np.random.default_rng(seed), max_len).mean())

    lo, hi = 0.0, w_fail
    while arl(hi) < arl0:
        lo, hi = hi, hi * 2.0
        if hi > 1e4:
            raise ValueError("no threshold reaches the requested ARL0")
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if arl(mid) >= arl0:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass
class BernoulliCusum:
    """One running chart. ``update(failed)`` after each labelled trial; ``alarm`` stays set until ``reset``."""

    p0: float
    p1: float
    h: float
    arl0: float = 500.0
    s: float = 0.0
    trials: int = 0
    failures: int = 0
    alarm: bool = False
    alarm_at: int = -1              # trial number (1-based, since the chart started) of the alarm
    history: list[float] = field(default_factory=list)

    @classmethod
    def calibrated(cls, p0: float, odds_ratio: float = 2.0, arl0: float = 500.0) -> BernoulliCusum:
        # keep p0 away from 0 and 1: a perfect baseline window still has a failure rate, just an unseen one
        p0 = min(max(p0, 0.01), 0.9)
        p1 = shifted_rate(p0, odds_ratio)
        return cls(p0=p0, p1=p1, h=calibrate_threshold(p0, p1, arl0), arl0=arl0)

    def update(self, failed: bool) -> bool:
        w_fail, w_ok = increments(self.p0, self.p1)
        self.s = max(0.0, self.s + (w_fail if failed else w_ok))
        self.trials += 1
        self.failures += int(failed)
        self.history.append(self.s)
        del self.history[:-200]
        if self.s >= self.h and not self.alarm:
            self.alarm, self.alarm_at = True, self.trials
        return self.alarm

    def reset(self) -> None:
        self.s, self.trials, self.failures, self.alarm, self.alarm_at = 0.0, 0, 0, False, -1
        self.history.clear()

    def to_dict(self) -> dict:
        return {"p0": self.p0, "p1": self.p1, "h": self.h, "arl0": self.arl0, "s": self.s, "trials": self.trials,
                "failures": self.failures, "alarm": self.alarm, "alarm_at": self.alarm_at}

    @classmethod
    def from_dict(cls, d: dict) -> BernoulliCusum:
        keys = ("p0", "p1", "h", "arl0", "s", "trials", "failures", "alarm", "alarm_at")
        return cls(**{k: d[k] for k in keys})
