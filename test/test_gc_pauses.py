"""GcPauses times the collector's own collections (gc.callbacks), one window per take()."""

from __future__ import annotations

import gc

from h1_training.gc_pauses import GcPauses, GcSummary


def test_each_collection_is_timed_with_its_generation_and_take_starts_a_new_window():
    ticks = iter(range(0, 10_000, 25))  # a clock that advances 25 ms per reading: each collection takes 25 ms
    pauses = GcPauses(clock=lambda: next(ticks) / 1e3).install()
    try:
        pauses.take()
        gc.collect(0)
        gc.collect(2)
        window = pauses.take()
        assert window.collections >= 2
        assert window.longest_ms == 25.0 and window.over_10ms == window.collections
        assert window.longest_generation in (0, 2)
        assert abs(window.total_ms - 25.0 * window.collections) < 1e-6
        assert "25.0 ms" in window.describe()
        assert pauses.take().collections <= 1  # a new window (an automatic collection may slip in)
    finally:
        pauses.uninstall()
    gc.collect()
    assert pauses.take().collections == 0  # uninstalled: nothing counted


def test_a_real_full_collection_is_seen_and_described():
    pauses = GcPauses().install()
    try:
        junk = []
        for _ in range(20_000):
            a, b = [], []
            a.append(b)
            b.append(a)  # cycles: only the cyclic collector frees them
            junk.append(a)
        del junk, a, b
        gc.collect()
        window = pauses.take()
    finally:
        pauses.uninstall()
    assert window.collections >= 1 and window.longest_generation == 2 and window.longest_ms > 0
    assert GcSummary().describe() == "no garbage collection"
