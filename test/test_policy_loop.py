"""The session's policy loop against a slow model on the real wire (an openpi-protocol WebSocket server on loopback
that takes 100 ms per inference): the control thread never waits for a chunk, and a new chunk is blended in
linearly from the previous one at the switch (session/policy_loop.py)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from websockets.sync.server import serve as ws_serve

from h1_training.policy import codec
from h1_training.policy.client import PolicyClient
from h1_training.procs import wait_until
from h1_training.session.policy_loop import PolicyLoop, _Blend, _Chunk, blend_weight
from h1_training.session.settings import SessionSettings

OFFSET = 0.3  # rad between consecutive chunks: each chunk disagrees with the previous one by this much


@pytest.fixture
def slow_server():
    """Answers request n after ``delay_s`` with a 50-row chunk whose every value is ``n * OFFSET``."""
    cfg = SimpleNamespace(delay_s=0.1, requests=0)

    def handler(ws):
        ws.send(codec.packb({"model_id": "slow", "action_horizon": 50}))
        for msg in ws:
            codec.unpackb(msg)
            time.sleep(cfg.delay_s)
            n, cfg.requests = cfg.requests, cfg.requests + 1
            ws.send(codec.packb({"actions": np.full((50, 14), n * OFFSET, np.float32), "model_id": "slow"}))

    server = ws_serve(handler, "127.0.0.1", 0, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg.port = server.socket.getsockname()[1]
    yield cfg
    server.shutdown()
    thread.join(5)


def run_loop(port: int, switches: int, **kw) -> tuple[PolicyLoop, np.ndarray, list[str]]:
    rows: list[np.ndarray] = []
    failures: list[str] = []
    loop = PolicyLoop(PolicyClient("127.0.0.1", port), lambda: {"state": np.zeros(14, np.float32)},
                      lambda row, version, proposal: rows.append(row.copy()), failures.append, rate_hz=50.0, **kw)
    loop.start()
    try:
        wait_until(lambda: loop.stats.chunk_switches >= switches or failures, 30, f"{switches} chunk switches")
        wait_until(lambda: loop.stats.ticks >= len(rows) and len(rows) >= 15 * switches or failures, 30,
                   "the last blend to finish")
    finally:
        loop.stop()
    return loop, np.stack(rows), failures


def test_a_slow_model_never_holds_a_tick_and_each_chunk_is_blended_in(slow_server):
    loop, rows, failures = run_loop(slow_server.port, 4, replan_steps=10, blend_steps=9)
    st = loop.stats
    assert not failures
    # inference (100 ms = 5 ticks) ran beside the ticks: the next chunk was always there before the current one
    # (50 rows, the next asked for after 10) ran out, so no tick repeated a last row waiting for it
    assert st.held_ticks == 0 and st.inferences >= 5
    # a 0.3 rad disagreement between chunks arrives as ten steps of 0.03 rad, not one of 0.3
    steps = np.abs(np.diff(rows[:, 0]))
    assert np.allclose(rows, rows[:, :1])               # every joint alike (the chunks are uniform)
    assert steps.max() <= OFFSET / 10 * (st.missed_ticks + 1) + 1e-6, steps.max()
    assert rows[-1, 0] >= 3 * OFFSET - 1e-6              # the new chunks were reached, not averaged away
    assert abs(st.max_boundary_step_rad - OFFSET / 10) < 1e-5, st.max_boundary_step_rad
    ramp = rows[:, 0][(rows[:, 0] > 1e-6) & (rows[:, 0] < OFFSET - 1e-6)]  # the first switch: 0 -> 0.3
    assert np.allclose(np.unique(ramp.round(6)), OFFSET * np.arange(1, 10) / 10, atol=1e-6)


def test_without_a_blend_the_switch_is_one_step(slow_server):
    loop, rows, failures = run_loop(slow_server.port, 3, replan_steps=10, blend_steps=0)
    assert not failures and loop.stats.held_ticks == 0
    steps = np.abs(np.diff(rows[:, 0]))
    assert abs(loop.stats.max_boundary_step_rad - OFFSET) < 1e-5
    jumps = steps[steps > 1e-6]
    assert len(jumps) >= 3 and np.allclose(jumps, OFFSET, atol=1e-5), jumps  # whole, at each switch


def test_a_chunk_arriving_during_a_blend_continues_from_what_was_published():
    """Blends nest: the third chunk blends from the running blend (where the output is), not from the second
    chunk (which the output has not reached yet)."""
    def chunk(value: float) -> _Chunk:
        return _Chunk(np.full((50, 14), value, np.float32), tick0=0, model_version="v")

    a, b, c = chunk(0.0), chunk(1.0), chunk(2.0)
    ab = _Blend(a, b, tick=0, steps=9)
    assert [round(float(ab.row(t)[0]), 6) for t in range(3)] == [0.1, 0.2, 0.3]
    abc = _Blend(ab, c, tick=3, steps=9)
    first = float(abc.row(3)[0])
    assert first == pytest.approx(0.9 * 0.4 + 0.1 * 2.0)   # (1 - w) * (the a->b blend at tick 3) + w * c
    assert first - 0.3 < 1.0 - 0.3                         # far below the jump to b's 1.0 that a restart would make
    values = [float(abc.row(t)[0]) for t in range(3, 20)]
    assert np.all(np.diff(values) >= 0) and values[9] == pytest.approx(2.0)  # c alone from tick 3 + 9 on
    assert abc.old is b  # the inner blend ended (tick 9): only its target is kept
    assert blend_weight(0, 0) == 1.0 and blend_weight(4, 9) == 0.5 and blend_weight(12, 9) == 1.0


def test_blend_steps_is_checked():
    with pytest.raises(ValueError, match="blend_steps"):
        PolicyLoop(PolicyClient("127.0.0.1", 1), dict, lambda *a: None, lambda r: None, blend_steps=-1)
    assert SessionSettings().blend_steps == 10
    with pytest.raises(ValueError, match="blend_steps"):
        SessionSettings(blend_steps=-2)
