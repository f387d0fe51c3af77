"""The policy loop (chunk broker, no rclpy): a policy from the server run at the control rate.

An inference thread sends the observation to the policy server and receives an action chunk [H, 14]; the control
thread publishes one row per tick at ``rate_hz``, open loop, and asks for the next chunk after ``replan_steps``
rows (or when the chunk runs out: then it repeats the last row, a constant target, until the next chunk arrives
or the request times out). Rows that elapsed while the server computed are skipped, so the chunk stays aligned
with time. Safety rules: see ``session/runner.py``.
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


@dataclass
class LoopStats:
    ticks: int = 0
    late_ticks: int = 0        # ticks that started more than one period late
    held_ticks: int = 0        # ticks that repeated a chunk's last row waiting for the next chunk
    inferences: int = 0
    infer_ms_last: float = 0.0
    infer_ms_max: float = 0.0


class PolicyLoop:
    """Run a policy from the server at the control rate; see the module docstring.

    ``publish(row[14] float32, model_version, proposal)`` sends one target; ``observe()`` returns an
    observation (ValueError when there is none); ``on_failure(reason)`` is called once, from a loop thread,
    after publishing stopped.
    """

    def __init__(self, client: PolicyClient, observe: Callable[[], dict],
                 publish: Callable[[np.ndarray, str, bool], None], on_failure: Callable[[str], None], *,
                 rate_hz: float = 50.0, replan_steps: int = 25, max_chunk_rows: int = 0,
                 skip_elapsed_rows: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.observe = observe
        self.publish = publish
        self.on_failure = on_failure
        self.period = 1.0 / rate_hz
        self.replan_steps = replan_steps
        self.max_chunk_rows = max_chunk_rows
        self.skip_elapsed_rows = skip_elapsed_rows
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
        chunk: _Chunk | None = None
        requested = False
        try:
            # a late tick is skipped (on the time grid), never made up for by a burst
            while (tick := self._ticker.wait(self._stop)) is not None:
                k = tick[0]
                with self._lock:
                    fresh, self._next = self._next, None
                if fresh is not None:
                    chunk, requested = fresh, False
                    if not self.skip_elapsed_rows:
                        chunk.tick0 = k          # row 0 now, whatever the inference latency was
                    chunk.first_row = max(k - chunk.tick0, 0)
                assert chunk is not None
                rows = chunk.actions.shape[0]
                idx = max(k - chunk.tick0, 0)
                held = idx >= rows
                row = chunk.actions[min(idx, rows - 1)]
                executed = idx - chunk.first_row + 1
                if not requested and (idx >= rows - 1 or (self.replan_steps and executed >= self.replan_steps)):
                    requested = True
                    self._request.set()
                if self._stop.is_set():
                    break
                self.publish(row, chunk.model_version, self.proposal)
                self.stats.ticks += 1
                self.stats.held_ticks += held
                if tick[1] or self._tick_now() > k:  # woke or finished more than a period late
                    self.stats.late_ticks += 1
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
