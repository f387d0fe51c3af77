"""kill -9 of the recorder (node and HDF5 writer) at seeded random moments of an episode, twice in a row: after the
next recorder's start-up repair every episode meets the HDF5 contract and at most 1 s of samples is lost; and a kill
while the writer is seconds behind (stopped with SIGSTOP) loses no more: the sampler's write-ahead journal holds
what the writer had not written. The same code as `h1-training bench recorder-kill` (20 x 60 s)."""

from __future__ import annotations

import sys

import pytest

from h1_training.bench.recorder_kill import SMALL_FEED, kill_moments, kill_series, summarize
from h1_training.recording import layout as L

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


def test_a_kill_while_the_writer_is_seconds_behind_loses_at_most_one_second(procs, probe, tmp_path):
    procs.start("feed", [sys.executable, "-m", "h1_training.nodes.sim.bench_feed", *SMALL_FEED])
    stall = 3.0  # the writer gets no CPU for 3 s before the kill: 150 samples it never saw
    results = kill_series(procs, probe, tmp_path, [4.5], stall_writer_s=stall)
    run = results[0]
    assert run.valid, run.problem
    assert 0 <= run.samples_lost_s <= 1.0, run
    # the rows of the stalled seconds are in the episode (replayed from the journal), in order, none invented
    (episode,) = list(tmp_path.rglob("episode_*.hdf5"))
    import h5py
    import numpy as np

    with h5py.File(episode, "r") as f:
        assert "journal" in str(f.attrs[L.ATTR_RECOVERED_REASON])
        t = f[L.EXTRA_SAMPLE_TIME_NS][:].astype(np.int64)
        assert (t[-1] - t[0]) / 1e9 >= 4.5 - 1.0 - 0.5  # the episode reaches into the stall (start-up slack 0.5 s)
        assert (np.diff(t) > 0).all()
        assert len(t) + int(f.attrs[L.ATTR_MISSED_TICKS]) >= round((t[-1] - t[0]) / 20e6)
    assert not list(tmp_path.rglob("*.partial")) and not list(tmp_path.rglob("*.unrecoverable"))
