"""Dataset catalog and export without ROS: episodes written through the recorder's own writer (EpisodeWriter fed
by the Sampler) and the layout's write_episode; a corrupted file scores 0 with the inspector's reason, a repaired
one is flagged, each deduction is named; the cache skips unchanged files; exports never overwrite."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from h1_training.datasets.catalog import Catalog, QualityPolicy, score_episode
from h1_training.datasets.export import ExportJob, ExportResult, default_output, export_dataset
from h1_training.recording import layout as L
from h1_training.recording.inspect import inspect_episode
from h1_training.recording.repair import repair_partial
from h1_training.recording.sampler import Sampler, Slots
from h1_training.recording.writer import EpisodeMeta, EpisodeWriter
from h1_training.robot_model import CAMERA_NAMES
from h1_training.training.synthetic import make_episode

MS = 1_000_000


def _jpeg(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


JPEGS = [_jpeg(i) for i in range(len(CAMERA_NAMES))]


def record(save_dir: Path, index: int, frames: int, *, epoch: int = 1, success: int = -1, period_ms: int = 20,
           missed: int = 0, placeholder_cam: str | None = None, finish: bool = True) -> Path:
    """One episode through the recorder's Sampler and EpisodeWriter on a fake clock (``period_ms`` per tick)."""
    now = [1000 * MS]
    slots = Slots(lambda: now[0])
    sampler = Sampler(slots, stale_after_s=0.2, placeholder_jpeg=_jpeg(99))
    slots.set_mode("TRACK")
    final = L.episode_path(save_dir, epoch, index)
    w = EpisodeWriter(final, EpisodeMeta(epoch, index, prompt="stack"), batch_frames=10, fsync=False)
    for i in range(frames):
        now[0] = (1000 + period_ms * i) * MS
        slots.set_qpos(np.full(14, i * 1e-3), now[0])
        slots.set_hand(np.full(12, 0.5), now[0])
        slots.set_action(np.full(14, 0.1), now[0], "v3")
        for k, cam in enumerate(CAMERA_NAMES):
            slots.set_image(cam, JPEGS[k], now[0], placeholder=cam == placeholder_cam)
        w.append(sampler.take(i, now[0], 1_700_000_000 * 10**9 + now[0]), missed if i == frames // 2 else 0)
    if finish:
        w.finish(success_label=success)
    else:
        w.flush()
        w.abort()  # like a crash: the .partial file stays
    return final


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    """save_dir/training_session_epoch1 with one episode of each kind."""
    root = tmp_path_factory.mktemp("data")
    save = root / "robot"
    record(save, 0, 100, success=1)                                              # good: 100
    record(save, 1, 100, success=0, missed=10, placeholder_cam="cam_left_wrist")  # missed ticks + a missing camera
    bad = record(save, 2, 100)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 2 // 5])             # cut short: unreadable
    crashed = record(save, 3, 100, finish=False)
    assert repair_partial(L.partial_path(crashed)).ok                            # repaired by the recorder's tool
    record(save, 4, 20)                                                          # 0.38 s
    record(save, 5, 100, period_ms=25)                                           # 40 Hz for 50 Hz recorded
    record(save, 6, 30, finish=False)                                            # unsaved .partial, not repaired
    return root


def test_scores_name_every_deduction(session):
    cat = Catalog([session])
    [ds] = cat.refresh()
    assert ds.name == "robot/training_session_epoch1" and ds.format == "hdf5" and ds.fps == 50.0
    eps = ds.episodes
    assert [Path(e.path).name for e in eps] == [f"episode_{i}.hdf5" for i in range(6)]  # the .partial is not one
    names = [{d.name for d in e.deductions} for e in eps]

    assert eps[0].quality == 100.0 and eps[0].problems == [] and eps[0].success == 1
    assert eps[0].frames == 100 and eps[0].model_version == "v3" and abs(eps[0].duration_s - 1.98) < 1e-6

    assert names[1] == {"missed_ticks", "placeholder:cam_left_wrist"}
    assert eps[1].missed_ticks == 10 and eps[1].quality == pytest.approx(100 - 2 * 100 * 10 / 110 - 25, abs=0.1)
    assert any("10 of 110 ticks" in p for p in eps[1].problems)
    assert any("100% placeholder frames" in p for p in eps[1].problems)

    assert eps[2].quality == 0.0 and not eps[2].valid and names[2] == {"contract"}
    assert "not a readable HDF5 file" in eps[2].problems[0]                        # the inspector's own words
    assert eps[2].frames == 0

    assert eps[3].recovered and names[3] == {"recovered"} and eps[3].quality == 90.0
    assert "crash" in eps[3].problems[0]

    assert names[4] == {"short"} and eps[4].quality == 70.0 and "20 frames" in eps[4].problems[0]
    assert names[5] == {"rate"} and "achieved 40.0 Hz for 50 Hz" in eps[5].problems[0]
    assert eps[5].quality == pytest.approx(100 - (20 - 2), abs=0.1)               # 1 point per % beyond 2 %

    valid = [e for e in eps if e.valid]
    assert ds.total_frames == sum(e.frames for e in valid) == 100 + 100 + eps[3].frames + 20 + 100
    assert ds.success_rate == 0.5                                                # labelled: ep0 ok, ep1 failed
    assert ds.quality == pytest.approx(sum(e.quality for e in eps) / 6, abs=0.1)
    assert ds.problems[0].startswith("episode_2.hdf5: 0 (-100 contract: not a readable HDF5 file")
    assert any("1 unsaved episode file(s)" in p for p in ds.problems)
    assert ds.size_bytes > sum(Path(e.path).stat().st_size for e in eps)        # the .partial counts too
    assert ds.created_ns == min(p.stat().st_mtime_ns for p in Path(ds.path).iterdir())


def test_seed_format_file_without_extras_is_scored_on_what_it_holds(tmp_path):
    L.write_episode(L.episode_path(tmp_path, 3, 0), make_episode(60, 32, 24))
    [ds] = Catalog([tmp_path]).refresh()
    [ep] = ds.episodes
    assert ep.valid and ep.quality == 100.0 and ep.model_version == "synthetic-v0"
    assert ep.duration_s == pytest.approx(60 / 50) and ep.success == -1 and ds.success_rate == -1.0
    assert ds.name == "training_session_epoch3"


def test_policy_weights_and_the_one_percent_floor(session):
    rep = inspect_episode(L.episode_path(session / "robot", 1, 1))
    score, ded = score_episode(rep, QualityPolicy(placeholder_max=5.0, missed_per_pct=0.0))
    assert score == 95.0 and [d.name for d in ded] == ["placeholder:cam_left_wrist"]
    rep.cameras["cam_left_wrist"].placeholder_share = 0.009                      # under 1 %: free
    assert score_episode(rep, QualityPolicy(missed_per_pct=0.0))[0] == 100.0


def test_refresh_of_an_unchanged_tree_is_cached(tmp_path):
    for i in range(3):
        record(tmp_path / "a", i, 60)
    cat = Catalog([tmp_path / "a", tmp_path / "missing"])
    cat.refresh()
    assert cat.last.inspected == 3 and cat.last.missing_roots == [str(tmp_path / "missing")]
    cat.refresh()
    assert cat.last.inspected == 0  # nothing opened again: cached by size and mtime (its speed is not a test)
    # one file replaced (other size and mtime), one new session: only those are inspected
    L.episode_path(tmp_path / "a", 1, 2).unlink()
    record(tmp_path / "a", 2, 20)
    record(tmp_path / "a", 0, 60, epoch=2)
    datasets = cat.refresh()
    assert cat.last.inspected == 2 and [d.name for d in datasets] == ["training_session_epoch1",
                                                                       "training_session_epoch2"]
    assert datasets[0].episodes[2].quality == 70.0
    assert cat.find("training_session_epoch2") is datasets[1]
    assert cat.find(str(tmp_path / "a" / "training_session_epoch2")) is datasets[1]
    assert cat.find("nope") is None


def test_export_hdf5_copies_valid_episodes_and_never_overwrites(session, tmp_path):
    cat = Catalog([session])
    [ds] = cat.refresh()
    out = tmp_path / "exports" / "e1"
    r = export_dataset(ds, "hdf5", out)
    assert r.ok, r.message
    assert r.output_path == str(out) and r.episodes == 5 and "skipped 1" in r.message and "episode_2.hdf5" in r.message
    copied = sorted(p.name for p in (out / "training_session_epoch1").iterdir())
    assert copied == ["episode_0.hdf5", "episode_1.hdf5", "episode_3.hdf5", "episode_4.hdf5", "episode_5.hdf5"]
    assert (out / "training_session_epoch1" / "episode_0.hdf5").read_bytes() == Path(ds.episodes[0].path).read_bytes()
    manifest = json.loads((out / "h1_export.json").read_text())
    assert manifest["source"] == ds.path and "not a readable" in manifest["skipped"][0]["reason"]
    assert not list((tmp_path / "exports").glob(".*"))                            # no staging folder left
    # the copy is a dataset like the original (a catalog over it sees the same valid episodes)
    [copy] = Catalog([out]).refresh()
    assert [e.quality for e in copy.episodes] == [e.quality for e in ds.episodes if e.valid]

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = export_dataset(ds, "hdf5", out)
    assert not again.ok and "not empty" in again.message and "nothing was overwritten" in again.message
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert "format must be one of" in export_dataset(ds, "zip", tmp_path / "z").message
    assert "inside the dataset" in export_dataset(ds, "hdf5", Path(ds.path) / "x").message
    (tmp_path / "empty").mkdir()
    assert export_dataset(ds, "hdf5", tmp_path / "empty").ok                     # an empty folder may be used
    assert default_output(tmp_path, ds, "hdf5", now=0).name.startswith("robot_training_session_epoch1_hdf5_19")


def test_export_skips_a_file_changed_since_the_refresh_and_can_be_cancelled(tmp_path):
    for i in range(2):
        record(tmp_path / "d", i, 60)
    [ds] = Catalog([tmp_path / "d"]).refresh()
    time.sleep(0.01)
    record(tmp_path / "d", 2, 60)                  # new file: not in the snapshot, not exported
    p1 = Path(ds.episodes[1].path)
    p1.write_bytes(p1.read_bytes() + b"\0")        # changed after the refresh
    r = export_dataset(ds, "hdf5", tmp_path / "out")
    assert r.ok and r.episodes == 1 and "changed or removed since the last refresh" in r.message
    cancel = threading.Event()
    cancel.set()
    r = export_dataset(ds, "hdf5", tmp_path / "out2", cancel=cancel)
    assert not r.ok and "cancelled" in r.message and not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_job_runs_one_at_a_time():
    job = ExportJob()
    release = threading.Event()
    results: list[ExportResult] = []
    done = threading.Event()

    def slow(cancel: threading.Event) -> ExportResult:
        release.wait(10)
        return ExportResult(True, "first", "/x")

    def finished(r: ExportResult) -> None:
        results.append(r)
        done.set()

    assert job.start("a as hdf5 to /x", slow, finished) is None
    refused = job.start("b", lambda c: ExportResult(True, "second"), finished)
    assert refused is not None and "already running (a as hdf5 to /x" in refused
    release.set()
    assert done.wait(5) and [r.message for r in results] == ["first"]
    for _ in range(100):
        if not job.running:
            break
        time.sleep(0.01)
    done.clear()
    assert job.start("c", lambda c: 1 / 0, finished) is None                     # a crash still replies
    assert done.wait(5) and not results[-1].ok and "ZeroDivisionError" in results[-1].message


def test_lerobot_export_and_catalog(tmp_path):
    pytest.importorskip("lerobot")
    save = tmp_path / "data" / "robot"
    L.write_episode(L.episode_path(save, 1, 0), make_episode(60, 32, 24, seed=0))
    record(save, 1, 60, success=1, missed=6)
    [ds] = Catalog([save]).refresh()
    out = tmp_path / "data" / "lerobot" / "e1"
    r = export_dataset(ds, "lerobot", out, workers=1)
    assert r.ok, r.message
    assert r.episodes == 2 and r.frames == 120 and (out / "meta" / "info.json").is_file()
    assert json.loads((out / "h1_conversion.json").read_text())["out_dir"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["e1"]          # converted in a hidden folder, then renamed

    cat = Catalog([tmp_path / "data"])
    lr, hd = cat.refresh()
    assert (lr.name, lr.format, hd.format) == ("lerobot/e1", "lerobot", "hdf5")
    assert len(lr.episodes) == 2 and lr.total_frames == 120 and lr.fps == 50.0
    assert [e.frames for e in lr.episodes] == [60, 60]
    # scores and labels come from the source episodes, which are still on disk
    assert [e.quality for e in lr.episodes] == [e.quality for e in hd.episodes]
    assert lr.episodes[1].missed_ticks == 6 and lr.success_rate == 1.0 and lr.quality < 100
    assert cat.last.inspected == 2                 # the sources were inspected once, for both datasets

    assert "can be exported as lerobot" in export_dataset(lr, "hdf5", tmp_path / "x").message
    copy = export_dataset(lr, "lerobot", tmp_path / "copy")
    assert copy.ok and (tmp_path / "copy" / "meta" / "info.json").is_file()

    for e in hd.episodes:                          # sources gone: not assessed, and said so
        Path(e.path).unlink()
    [lr] = cat.refresh()
    assert lr.quality == -1.0 and lr.success_rate == -1.0 and lr.total_frames == 120
    assert "source episode not found" in lr.episodes[0].problems[0]
    assert "2 episode(s) not assessed" in lr.problems[0]
