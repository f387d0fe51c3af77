"""The policy loop (chunk broker, no rclpy): a policy from the server run at the control rate.

An inference thread sends the observation to the policy server and receives an action chunk [H, 14]; the control
thread publishes one row per tick at ``rate_hz``, open loop, and asks for the next chunk after ``replan_steps``
rows (or when the chunk runs out: then it repeats the last row, a constant target, until the next chunk arrives
or the request times out). Rows that elapsed while the server computed are skipped, so the chunk stays aligned
with time. Safety rules: see ``session/runner.py``.

Inference never runs on the control thread: the next chunk is requested ``replan_steps`` rows into the current one,
so a model slower than a tick (100 ms = 5 ticks at 50 Hz) delivers it while the current chunk still has rows,
and no tick waits for it.

Chunk boundary: a **linear blend over the overlap** (not real-time chunking, which needs the model to inpaint the
frozen prefix; this works with any model). When the next chunk arrives at tick ``k``, the previous chunk still has
rows for the ticks after ``k`` (or its held last row); for ``blend_steps`` ticks the published row is
``(1 - w) * previous(t) + w * next(t)`` with ``w = (j + 1) / (blend_steps + 1)`` at the ``j``-th tick, then the
next chunk alone. A difference ``d`` between the two chunks at the switch is spread over ``blend_steps + 1`` ticks
(``d / (blend_steps + 1)`` per tick on top of the chunks' own motion) instead of one step of ``d``. A chunk that
arrives during a blend blends from what was being published (blends nest), so there is no step then either.
The arm's per-tick velocity clamp (``drivers/arm_safety.py``) still limits whatever is published.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from h1_training.policy.client import PolicyClient, PolicyClientError
from h1_training.policy.obs import check_result
from h1_training.rates import Ticker


@dataclass
class _Chunk:
    actions: np.ndarray        # [rows, 14] float32
    tick0: int                 # control tick its observation was taken at (row 0 belongs to it)
    model_version: str
    first_row: int = -1        # row the control thread started this chunk at (-1: not yet used)

    def row(self, tick: int) -> np.ndarray:
        """The row for control tick ``tick`` (its last row once the chunk has run out, its first before tick0)."""
        return self.actions[min(max(tick - self.tick0, 0), self.actions.shape[0] - 1)]


@dataclass
class _Blend:
    """Linear blend from ``old`` (a chunk or a blend still running) to ``new`` over ``steps`` ticks from ``tick``."""

    old: _Chunk | _Blend
    new: _Chunk
    tick: int                  # the switch tick: its row is the first blended one
    steps: int

    def done(self, tick: int) -> bool:
        return tick - self.tick >= self.steps

    def row(self, tick: int) -> np.ndarray:
        if self.done(tick):
            return self.new.row(tick)
        if isinstance(self.old, _Blend) and self.old.done(tick):
            self.old = self.old.new            # an inner blend that ended: nesting stays shallow
        w = blend_weight(tick - self.tick, self.steps)
        return ((1.0 - w) * self.old.row(tick) + w * self.new.row(tick)).astype(np.float32)


def blend_weight(j: int, steps: int) -> float:
    """Weight of the next chunk at the ``j``-th tick (0 = the switch tick) of a ``steps``-tick linear blend."""
    return 1.0 if j >= steps else (j + 1) / (steps + 1)


@dataclass
class LoopStats:
    ticks: int = 0
    late_ticks: int = 0        # ticks that started more than one period late
    missed_ticks: int = 0      # ticks of the grid skipped after the first published one (woke too late for them)
    held_ticks: int = 0        # ticks that repeated a chunk's last row waiting for the next chunk
    inferences: int = 0
    infer_ms_last: float = 0.0
    infer_ms_max: float = 0.0
    chunk_switches: int = 0    # chunks taken over from a previous one (the first chunk is not a switch)
    max_step_rad: float = 0.0           # largest per-tick change of a published target, any joint
    max_boundary_step_rad: float = 0.0  # the same, over the ticks from a switch to the end of its blend


class PolicyLoop:
    """Run a policy from the server at the control rate; see the module docstring.

    ``publish(row[14] float32, model_version, proposal)`` sends one target; ``observe()`` returns an
    observation (ValueError when there is none); ``on_failure(reason)`` is called once, from a loop thread,
    after publishing stopped.
    """

    def __init__(self, client: PolicyClient, observe: Callable[[], dict],
                 publish: Callable[[np.ndarray, str, bool], None], on_failure: Callable[[str], None], *,
                 rate_hz: float = 50.0, replan_steps: int = 25, max_chunk_rows: int = 0,
                 skip_elapsed_rows: bool = True, blend_steps: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if blend_steps < 0:
            raise ValueError(f"blend_steps must be >= 0, got {blend_steps}")
        self.client = client
        self.observe = observe
        self.publish = publish
        self.on_failure = on_failure
        self.period = 1.0 / rate_hz
        self.replan_steps = replan_steps
        self.max_chunk_rows = max_chunk_rows
        self.skip_elapsed_rows = skip_elapsed_rows
        self.blend_steps = blend_steps
        self.clock = clock
        self.stats = LoopStats()
        self.model_version = ""
        self.proposal = False
        self.failure = ""
        self._stop = threading.Event()
        self._request = threading.Event()
        self._lock = threading.Lock()
        self._next: _Chunk | None = None
        self._ticker = Ticker(rate_hz, 0, clock=self._clock_ns)  # restarted at start()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stop.is_set()

    def _clock_ns(self) -> int:
        return int(round(self.clock() * 1e9))

    def _tick_now(self) -> int:
        return self._ticker.tick_at(self._clock_ns())

    def _infer(self, tick0: int) -> _Chunk:
        obs = self.observe()
        t = time.perf_counter()
        result = check_result(self.client.infer(obs))
        ms = (time.perf_counter() - t) * 1000.0
        self.stats.inferences += 1
        self.stats.infer_ms_last, self.stats.infer_ms_max = ms, max(self.stats.infer_ms_max, ms)
        actions = result["actions"]
        if self.max_chunk_rows:
            actions = actions[: self.max_chunk_rows]
        version = str(result.get("model_id") or self.client.metadata.get("model_id") or "")
        self.model_version = version
        return _Chunk(np.ascontiguousarray(actions, np.float32), tick0, version)

    def start(self) -> None:
        """Connect, get the first chunk (so a dead server or a bad observation fails here, before TRACK), then
        start publishing. Raises PolicyClientError or ValueError (the client is closed then)."""
        try:
            self.client.connect()
            self._ticker.restart()
            self._next = self._infer(0)
        except BaseException:
            self.client.close()
            raise
        self._threads = [threading.Thread(target=self._control, name="policy-control", daemon=True),
                         threading.Thread(target=self._inference, name="policy-inference", daemon=True)]
        for th in self._threads:
            th.start()

    def set_proposal(self, proposal: bool) -> None:
        self.proposal = proposal

    def stop(self, timeout: float = 1.0) -> None:
        """Publishing has stopped when this returns (the control thread is joined). An inference in flight ends
        by itself (at most the client's request timeout) and its thread closes the connection."""
        self._stop.set()
        self._request.set()
        for th in self._threads:
            if th.name == "policy-control" and th is not threading.current_thread():
                th.join(timeout)

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self.failure = reason
            self._stop.set()
        self._request.set()
        self.on_failure(reason)

    def _control(self) -> None:
        chunk: _Chunk | None = None          # the newest chunk: what requests and held ticks refer to
        source: _Chunk | _Blend | None = None  # what the published row comes from (a blend into ``chunk``)
        requested = False
        last: tuple[int, np.ndarray] | None = None  # (tick, row) last published
        switched_at: int | None = None       # tick the newest chunk took over from a previous one
        missed0: int | None = None           # the grid's ticks before the first one: the first inference's time
        st = self.stats
        try:
            # a late tick is skipped (on the time grid), never made up for by a burst
            while (tick := self._ticker.wait(self._stop)) is not None:
                k = tick[0]
                with self._lock:
                    fresh, self._next = self._next, None
                if fresh is not None:
                    if not self.skip_elapsed_rows:
                        fresh.tick0 = k          # row 0 now, whatever the inference latency was
                    fresh.first_row = max(k - fresh.tick0, 0)
                    if chunk is not None:
                        st.chunk_switches += 1
                        switched_at = k
                    source = (_Blend(source, fresh, k, self.blend_steps) if source is not None and self.blend_steps
                              else fresh)
                    chunk, requested = fresh, False
                assert chunk is not None and source is not None
                rows = chunk.actions.shape[0]
                idx = max(k - chunk.tick0, 0)
                held = idx >= rows
                row = source.row(k)
                if isinstance(source, _Blend) and source.done(k):
                    source = chunk
                executed = idx - chunk.first_row + 1
                if not requested and (idx >= rows - 1 or (self.replan_steps and executed >= self.replan_steps)):
                    requested = True
                    self._request.set()
                if self._stop.is_set():
                    break
                self.publish(row, chunk.model_version, self.proposal)
                st.ticks += 1
                st.held_ticks += held
                if missed0 is None:
                    missed0 = self._ticker.missed
                st.missed_ticks = self._ticker.missed - missed0
                if last is not None:
                    step = float(np.max(np.abs(row - last[1]))) / max(k - last[0], 1)
                    st.max_step_rad = max(st.max_step_rad, step)
                    if switched_at is not None and k - switched_at <= self.blend_steps:
                        st.max_boundary_step_rad = max(st.max_boundary_step_rad, step)
                last = (k, row)
                if (tick[1] and st.ticks > 1) or self._tick_now() > k:  # woke or finished a period late
                    st.late_ticks += 1
        except Exception as exc:  # noqa: BLE001 - any error ends publishing and is reported
            self._fail(f"control loop error: {type(exc).__name__}: {exc}")

    def _inference(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._request.wait(timeout=0.1):
                    continue
                self._request.clear()
                if self._stop.is_set():
                    return
                try:
                    chunk = self._infer(self._tick_now())
                except (PolicyClientError, ValueError, OSError, TimeoutError) as exc:
                    self._fail(str(exc))
                    return
                except Exception as exc:  # noqa: BLE001
                    self._fail(f"inference error: {type(exc).__name__}: {exc}")
                    return
                with self._lock:
                    self._next = chunk
        finally:
            self.client.close()
