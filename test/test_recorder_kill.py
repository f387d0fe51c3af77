"""kill -9 of the recorder (node and HDF5 writer) at seeded random moments of an episode, twice in a row: after the
next recorder's start-up repair every episode meets the HDF5 contract and at most 1 s of samples is lost (the
writer flushes at least once a second). The same code as `h1-training bench recorder-kill` (20 x 60 s)."""

from __future__ import annotations

import sys

import pytest

from h1_training.bench.recorder_kill import SMALL_FEED, kill_moments, kill_series, summarize

pytestmark = pytest.mark.timeout(240)


def test_kill_moments_are_seeded_and_inside_the_episode():
    a = kill_moments(20, 60.0, seed=3)
    assert a == kill_moments(20, 60.0, seed=3) and a != kill_moments(20, 60.0, seed=4)
    assert all(1.0 <= t < 60.0 for t in a)
    with pytest.raises(ValueError):
        kill_moments(0, 60.0, 0)


def test_two_kills_in_a_row_are_repaired_with_at_most_one_second_lost(procs, probe, tmp_path):
    procs.start("feed", [sys.executable, "-m", "h1_training.nodes.sim.bench_feed", *SMALL_FEED])
    moments = kill_moments(2, 5.0, seed=1)
    results = kill_series(procs, probe, tmp_path, moments)
    figures = summarize(results)
    assert figures["runs"] == 2
    assert figures["files_valid"] == 2, figures["per_run"]
    assert 0 <= figures["max_samples_lost_s"] <= 1.0, figures["per_run"]
    assert all(r.frames > 0 for r in results)
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("*.unrecoverable"))
