"""The catalog's persistent index and parallel cold inspection (no ROS): a restarted catalog re-reads nothing that
is unchanged, and re-reads exactly what changed while it was down (rewritten, replaced by a file of the same size
and mtime, deleted); a damaged index is set aside, never fatal; worker processes give the same entries as the
calling thread."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from h1_training.datasets import catalog as C
from h1_training.datasets.catalog import Catalog, QualityPolicy
from h1_training.recording import layout as L
from h1_training.training.synthetic import make_episode


def _write(root: Path, index: int, frames: int = 20, seed: int = 0, success: int | None = None) -> Path:
    ep = make_episode(frames, 32, 24, seed=seed)
    if success is not None:
        ep.attrs = {**ep.attrs, L.ATTR_SUCCESS: success}
    return L.write_episode(L.episode_path(root, 1, index), ep)


def _by_path(cat: Catalog) -> dict[str, C.EpisodeEntry]:
    return {e.path: e for ds in cat.datasets for e in ds.episodes}


def _indexed_paths(index: Path) -> set[str]:
    con = sqlite3.connect(index)
    try:
        return {p for (p,) in con.execute("SELECT path FROM episodes")}
    finally:
        con.close()


def test_restart_reads_only_what_changed_while_down(tmp_path):
    root, index = tmp_path / "data", tmp_path / "state" / "catalog.sqlite3"
    paths = [_write(root, i, frames=20 + i, seed=i, success=0) for i in range(5)]
    first = Catalog([root], index_file=index, workers=1)
    first.refresh()
    assert first.last.inspected == 5 and _indexed_paths(index) == {str(p) for p in paths}
    before = _by_path(first)

    restarted = Catalog([root], index_file=index, workers=1)
    restarted.refresh()
    assert restarted.last.inspected == 0  # nothing re-read
    assert _by_path(restarted) == before

    # while "down": one file rewritten, one replaced by another of the same size and mtime, one deleted
    _write(root, 0, frames=60, seed=9)
    st = paths[1].stat()
    replacement = _write(tmp_path / "elsewhere", 1, frames=21, seed=1, success=1)  # only the label differs
    assert replacement.stat().st_size == st.st_size
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, paths[1])
    assert (paths[1].stat().st_size, paths[1].stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    paths[4].unlink()

    again = Catalog([root], index_file=index, workers=1)
    again.refresh()
    assert again.last.inspected == 2
    now = _by_path(again)
    assert now[str(paths[0])].frames == 60
    assert now[str(paths[1])].success == 1 and before[str(paths[1])].success == 0
    assert str(paths[4]) not in now
    assert _indexed_paths(index) == {str(p) for p in paths[:4]}  # the deleted file left the index too
    assert now[str(paths[2])] == before[str(paths[2])]


def test_changes_between_refreshes_of_one_catalog(tmp_path):
    root, index = tmp_path / "data", tmp_path / "catalog.sqlite3"
    a, b = _write(root, 0), _write(root, 1, seed=1)
    cat = Catalog([root], index_file=index, workers=1)
    cat.refresh()
    _write(root, 0, frames=40)
    b.unlink()
    cat.refresh()
    assert cat.last.inspected == 1
    assert [e.frames for e in cat.datasets[0].episodes] == [40]
    assert _indexed_paths(index) == {str(a)}


def test_damaged_index_is_set_aside_and_rebuilt(tmp_path):
    root, index = tmp_path / "data", tmp_path / "catalog.sqlite3"
    _write(root, 0)
    index.write_bytes(b"this is not a database" * 100)
    cat = Catalog([root], index_file=index, workers=1)
    cat.refresh()
    assert cat.last.inspected == 1 and len(cat.datasets[0].episodes) == 1
    assert "set aside" in cat.index_note
    assert list(tmp_path.glob("catalog.sqlite3.corrupt-*"))
    assert Catalog([root], index_file=index, workers=1).refresh() and _indexed_paths(index) == {
        str(L.episode_path(root, 1, 0))}


def test_index_of_another_decode_or_policy_starts_empty(tmp_path):
    root, index = tmp_path / "data", tmp_path / "catalog.sqlite3"
    _write(root, 0)
    Catalog([root], index_file=index, workers=1).refresh()
    other = Catalog([root], index_file=index, workers=1, policy=QualityPolicy(short_points=50.0))
    other.refresh()
    assert other.last.inspected == 1  # scores under another policy are not reused


def test_parallel_cold_refresh_equals_the_sequential_one(tmp_path):
    root = tmp_path / "data"
    n = C.PARALLEL_MIN + 4
    for i in range(n):
        _write(root, i, frames=10 + i % 7, seed=i % 5)
    bad = L.episode_path(root, 1, 3)
    bad.write_bytes(bad.read_bytes()[:4000])  # one unreadable file among them: scored 0 with its reason
    seq = Catalog([root], workers=1)
    seq.refresh()
    par = Catalog([root], workers=2)
    par.refresh()
    assert seq.last.parallel == 0 and par.last.parallel == 2
    assert par.last.inspected == seq.last.inspected == n
    assert _by_path(par) == _by_path(seq)
    assert _by_path(par)[str(bad)].quality == 0.0 and not _by_path(par)[str(bad)].valid
