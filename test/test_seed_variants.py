"""Data a seed user already has works here. Files written by an independent writer that follows the seed's own code
(test/seed_writers.py: h5py and PIL directly, not our writer): the recording client's ``cam_head`` JPEG files (with
and without the hands' 26 columns), the older writer's ``ego_cam`` JPEG files without phase, the Humanoid Everyday
converter's ``ego_cam`` raw arrays; each is inspected (variant named, not INVALID), converted to a LeRobotDataset,
catalogued, read frame by frame as playback does, trained on, picked up by the auto-train watcher, and imported
into our layout; a truncated episode is reported and skipped, never crashed on. The other way round, our files
exported with ``export-seed`` are read by a re-implementation of the seed converter's reading logic."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import seed_writers as SW

from h1_training.datasets.catalog import Catalog
from h1_training.datasets.export import export_dataset
from h1_training.recording import layout as L
from h1_training.recording.inspect import inspect_path
from h1_training.recording.reader import EpisodeError, load_episode, open_episode
from h1_training.recording.seed import RAW_TOLERANCE, export_seed, find_sources, import_seed
from h1_training.robot_model import CAMERA_NAMES
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, make_episode

T = 30
CLIENT = "seed client layout, cam_head JPEG"
CLIENT_HANDS = "seed client layout, cam_head JPEG, 26-wide qpos"
OLD = "seed client layout, ego_cam JPEG, no phase"
CONVERTER = "seed converter layout, ego_cam raw RGB, no wrist cameras, no phase"


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> dict[str, Path]:
    """A seed user's folders, as the seed's tools lay them out."""
    root = tmp_path_factory.mktemp("seed_user")
    raw = root / "h1_data_auto" / "fold_towel" / "epoch_2" / "raw"      # the client's <save_dir>/<task>/epoch_N/raw
    p = {
        "client": SW.write_client_episode(raw / "episode_0.hdf5", T, seed=1),
        "hands": SW.write_client_episode(raw / "episode_1.hdf5", T, hands=True, advantage=False, seed=2),
        "truncated": SW.write_client_episode(raw / "episode_2.hdf5", T, truncate_camera="cam_head", seed=3),
        "old": SW.write_client_episode(root / "old_runs" / "episode_0.hdf5", T, head="ego_cam", phase=False,
                                       size=(96, 128), seed=4),
        "converter": SW.write_converter_episode(root / "converted" / "move_lid" / "episode_0.hdf5", T, seed=5),
    }
    cut = SW.write_client_episode(raw / "episode_3.hdf5", T, seed=6)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])                                 # a copy cut short
    p["cut"] = cut
    p["root"] = root
    return p


def _digest(root: Path) -> dict[str, tuple[str, int]]:
    return {str(f): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in sorted(root.rglob("*")) if f.is_file()}


# --- reading and inspecting -------------------------------------------------------------------------------------
def test_inspect_names_each_variant_and_what_is_truly_missing(seed, capsys):
    report = inspect_path(seed["root"])
    by = {Path(e.path).name if "raw" in e.path else Path(e.path).parent.name: e for e in report.episodes}
    assert by["episode_0.hdf5"].valid and by["episode_0.hdf5"].variant == CLIENT
    assert by["episode_1.hdf5"].valid and by["episode_1.hdf5"].variant == CLIENT_HANDS
    assert by["old_runs"].valid and by["old_runs"].variant == OLD
    assert by["move_lid"].valid and by["move_lid"].variant == CONVERTER
    conv = by["move_lid"]
    assert not conv.cameras["cam_left_wrist"].recorded and conv.cameras["ego_cam"].encoding == "raw"
    assert any("not recorded" in w for w in conv.warnings)
    assert any("attrs derived from the data: episode_length" in w for w in conv.warnings)
    assert conv.frames == T and conv.fps == 30 and conv.policy_frames == T      # no zero action rows: all policy
    old = by["old_runs"]                                                      # phase derived from the zero rows
    assert old.policy_frames == int(0.6 * T) and old.human_frames == T - int(0.6 * T)
    assert by["episode_0.hdf5"].success == 1 and by["episode_1.hdf5"].success == 0   # the seed's advantage label
    truncated = by["episode_2.hdf5"]
    assert not truncated.valid and truncated.variant == CLIENT
    assert truncated.problems == [f"truncated: observations/images/cam_head holds {T - 5} frames, "
                                  f"observations/qpos {T}"]
    assert not by["episode_3.hdf5"].valid and "not a readable HDF5 file" in by["episode_3.hdf5"].problems[0]

    from h1_training.cli import main

    assert main(["inspect", str(seed["client"])]) == 0
    out = capsys.readouterr().out
    assert f"ok      {seed['client']} ({CLIENT})" in out and "INVALID" not in out
    assert main(["inspect", str(seed["truncated"])]) == 1
    out = capsys.readouterr().out
    assert f"INVALID {seed['truncated']} ({CLIENT})\n  truncated: observations/images/cam_head" in out


def test_view_gives_the_data_the_seed_wrote(seed):
    with open_episode(seed["hands"]) as ep:
        assert ep.variant.head_key == "cam_head" and ep.variant.qpos_width == 26
        full = SW.trajectory(T, 26, seed=2)
        np.testing.assert_array_equal(ep.qpos, full[:, :14])
        qh, ah = ep.hand_columns()
        np.testing.assert_array_equal(qh, full[:, 14:26])
        assert ah.shape == (T, 12) and ep.phase[0] == "policy" and ep.phase[-1] == "human"
        head = SW.scene(T, 224, 224, 0, seed=2)
        for i in (0, T // 2, T - 1):                      # JPEG (PIL, q85) of the scene the writer drew
            got = ep.cameras["ego_cam"].rgb(i)
            assert got.shape == (224, 224, 3)
            assert np.abs(got.astype(int) - head[i].astype(int)).mean() < 3
    with open_episode(seed["converter"]) as ep:            # raw frames come back exactly
        assert ep.cameras["ego_cam"].encoding == "raw" and ep.missing_cameras == ("cam_left_wrist", "cam_right_wrist")
        np.testing.assert_array_equal(ep.cameras["ego_cam"].rgb(7), SW.scene(T, 48, 64, 0, seed=5)[7])
        jpeg = ep.cameras["ego_cam"].jpeg(7)               # encoded on request, decodes to the same picture
        assert jpeg[:2] == b"\xff\xd8"
        assert ep.attrs["episode_length"] == T and ep.attrs["source"] == "humanoid_everyday"
    ep = load_episode(seed["old"], with_images=False)
    assert ep.length == T and ep.fps == 30.0 and ep.human_frames == T - int(0.6 * T)
    with pytest.raises(EpisodeError, match="truncated"):
        load_episode(seed["truncated"])
    with pytest.raises(EpisodeError, match="not a readable HDF5"):
        open_episode(seed["cut"])


def test_playback_reads_every_frame_in_order(seed):
    """What episode playback does with the reader: one open view, one frame at a time, in order."""
    for name in ("client", "old", "converter"):
        with open_episode(seed[name]) as ep:
            shapes = {cam: {frames.rgb(i).shape for i in range(ep.length)} for cam, frames in ep.cameras.items()}
            assert all(len(s) == 1 for s in shapes.values()), shapes
            assert len(ep.phase) == len(ep.qpos) == ep.length == T


# --- conversion, training, catalog, watcher ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(seed, tmp_path_factory):
    pytest.importorskip("lerobot")
    from h1_training.training.convert import convert_sessions

    out = tmp_path_factory.mktemp("lerobot") / "dataset"
    before = _digest(seed["root"])
    summary = convert_sessions([seed["root"]], out, workers=2, resize=(64, 48), progress=False)
    assert _digest(seed["root"]) == before
    return out, summary


def test_every_variant_converts_and_the_truncated_ones_are_skipped(seed, converted):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, summary = converted
    assert summary.episodes == 4 and summary.frames == 4 * T and summary.fps == 30
    assert summary.variants == {CLIENT: 1, CLIENT_HANDS: 1, OLD: 1, CONVERTER: 1}
    reasons = {s.path: s.reason for s in summary.skipped}
    assert set(reasons) == {str(seed["truncated"]), str(seed["cut"])}
    assert reasons[str(seed["truncated"])].startswith("truncated: observations/images/cam_head holds 25 frames")
    assert "not a readable HDF5" in reasons[str(seed["cut"])]
    assert summary.filled_cameras == {str(seed["converter"]): ["cam_left_wrist", "cam_right_wrist"]}
    ds = LeRobotDataset("local/h1_training", root=out, video_backend="pyav")
    assert ds.num_episodes == 4 and ds.fps == 30
    order = [Path(s) for s in summary.sources]
    he = order.index(seed["converter"])
    frame = ds[he * T + 5]
    assert float(frame["observation.images.cam_left_wrist"].abs().max()) < 0.05    # black, as the seed pads
    ref = SW.scene(T, 48, 64, 0, seed=5)[5]
    got = (frame["observation.images.cam_head"].numpy().transpose(1, 2, 0) * 255)
    assert np.abs(got - ref).mean() < 25                                            # lossy H.264 of the same picture
    np.testing.assert_allclose(frame["observation.state"].numpy(), SW.trajectory(T, 14, seed=5)[5], atol=1e-6)


def test_training_steps_run_on_the_converted_seed_data(converted, tmp_path):
    from h1_training.training.trainer import TrainConfig, run_training

    out, _ = converted
    info = run_training(TrainConfig(policy_type="cnn_lstm", dataset_dir=out, output_root=tmp_path / "models", steps=2,
                                    batch_size=4, device="cpu", extra=dict(TINY_POLICY_OPTIONS["cnn_lstm"])))
    assert info.metrics["steps"] == 2 and np.isfinite(info.metrics["final_loss"])
    assert info.dataset["episodes"] == 4


def test_catalog_lists_seed_folders_and_scores_what_they_hold(seed):
    cat = Catalog([seed["root"]], decode="sample")
    datasets = {ds.name: ds for ds in cat.refresh()}
    assert set(datasets) == {"h1_data_auto/fold_towel/epoch_2/raw", "old_runs", "converted/move_lid"}
    raw = datasets["h1_data_auto/fold_towel/epoch_2/raw"]
    eps = {Path(e.path).name: e for e in raw.episodes}
    assert eps["episode_0.hdf5"].valid and eps["episode_0.hdf5"].quality == 100
    assert eps["episode_0.hdf5"].variant == CLIENT and eps["episode_0.hdf5"].success == 1
    assert eps["episode_2.hdf5"].quality == 0 and "truncated" in eps["episode_2.hdf5"].problems[0]
    assert eps["episode_3.hdf5"].quality == 0 and raw.total_frames == 2 * T and raw.fps == 30
    assert raw.success_rate == 0.5                                  # advantage True and False
    assert any(f"{CLIENT} (2); {CLIENT_HANDS} (1)" in n for n in raw.notes)     # truncated one included
    he = datasets["converted/move_lid"].episodes[0]
    assert he.valid and he.quality == 50                            # two cameras never recorded: -25 each
    assert [d.name for d in he.deductions] == ["missing:cam_left_wrist", "missing:cam_right_wrist"]


def test_auto_train_watcher_waits_on_unusable_epochs_and_trains_on_seed_files(seed, tmp_path):
    """The watcher (real JobManager, real train worker process, scripted fit) reads episodes through the reader."""
    import shutil

    from h1_training.serve.model_pool import ModelPool
    from h1_training.training.autotrain import AutoTrainConfig, AutoTrainer
    from h1_training.training.jobs import JobManager

    data, models = tmp_path / "data", tmp_path / "models"
    bad = L.session_dir(data, 1)
    bad.mkdir(parents=True)
    for name in ("truncated", "cut"):
        shutil.copy(seed[name], bad / f"episode_{len(list(bad.iterdir()))}.hdf5")
    jobs = JobManager(tmp_path / "work", models)
    try:
        trainer = AutoTrainer(AutoTrainConfig(policy_type="scripted", quiet_s=1), data, jobs, ModelPool(models), None)
        later = time.time() + 60
        assert trainer.tick(later) is None                               # complete, but nothing usable in it
        status = trainer.status()["epochs"][0]
        assert status["complete"] and "0 usable episode(s)" in status["reason"]
        assert "truncated" in status["unusable"]["episode_0.hdf5"]
        good = L.session_dir(data, 2)
        good.mkdir()
        for i, name in enumerate(("client", "old", "converter")):
            shutil.copy(seed[name], good / f"episode_{i}.hdf5")
        job_id = trainer.tick(later)
        assert job_id is not None and trainer.trained["2"]["epochs_used"] == [1, 2]
        deadline = time.monotonic() + 60
        while jobs.get(job_id).status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
        job = jobs.get(job_id)
        assert job.status == "succeeded", job.error
    finally:
        jobs.close()
    from h1_training.training.registry import ModelRegistry

    assert ModelRegistry(models).get(job.model_id).dataset["episodes"] == 3   # all three seed variants were read


# --- import into our layout -------------------------------------------------------------------------------------
def test_import_seed_copies_into_our_layout_verifies_and_never_touches_the_source(seed, tmp_path, capsys):
    from h1_training.cli import main

    before = _digest(seed["root"])
    dst = tmp_path / "h1_data"
    rc = main(["import-seed", str(seed["root"]), str(dst), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1                                                   # two sources were skipped
    assert _digest(seed["root"]) == before                           # the source, byte for byte and mtime
    assert set(report["skipped"]) == {str(seed["truncated"]), str(seed["cut"])}
    dests = {Path(d["source"]).resolve(): Path(d["dest"]) for d in report["done"]}
    assert len(dests) == 4
    client_dst = dests[seed["client"].resolve()]
    assert client_dst == L.episode_path(dst, 2, 0)                    # epoch from epoch_2/, number kept
    assert dests[seed["hands"].resolve()] == L.episode_path(dst, 2, 1)
    assert dests[seed["converter"].resolve()] == L.episode_path(dst, 1, 0)  # no epoch folder: --epoch (1)
    assert dests[seed["old"].resolve()] == L.episode_path(dst, 1, 1)        # its number 0 taken: the next free
    for src, out in dests.items():
        with h5py.File(out, "r") as f:
            assert L.validate(f) == []                               # our contract, unchanged
            assert f.attrs[L.ATTR_SEED_SOURCE] == str(src)
    with h5py.File(client_dst, "r") as f, h5py.File(seed["client"], "r") as s:
        for i in range(T):                                           # JPEG frames: the very same bytes
            assert bytes(f[L.IMAGE_KEYS[0]][i]) == bytes(s["observations/images/cam_head"][i])
        assert f.attrs["success"] == 1 and bool(f.attrs["advantage"]) is True
    with h5py.File(dests[seed["hands"].resolve()], "r") as f:
        np.testing.assert_array_equal(f[L.EXTRA_SEED_QPOS_HANDS][:], SW.trajectory(T, 26, seed=2)[:, 14:])
    he = dests[seed["converter"].resolve()]
    with open_episode(he) as ep:
        assert ep.variant.describe() == "h1_training layout, ego_cam JPEG"
        flags = ep.extra_group(L.EXTRA_PLACEHOLDER)
        assert flags["cam_left_wrist"].all() and not flags["ego_cam"].any()
        ref = SW.scene(T, 48, 64, 0, seed=5)
        err = max(np.abs(ep.cameras["ego_cam"].rgb(i).astype(int) - ref[i].astype(int)).mean() for i in range(T))
        assert err <= RAW_TOLERANCE
    rep = inspect_path(dst)
    assert not rep.invalid and len(rep.episodes) == 4
    # again: nothing new, nothing replaced
    again = import_seed(seed["root"], dst)
    assert not again.done and len(again.already) == 4 and len(again.skipped) == 2
    with pytest.raises(ValueError, match="inside the source"):
        import_seed(seed["root"], seed["root"] / "out")


def test_import_refuses_a_source_frame_that_does_not_decode(tmp_path):
    src = SW.write_client_episode(tmp_path / "seed" / "epoch_1" / "raw" / "episode_0.hdf5", T, seed=9)
    with h5py.File(src, "r+") as f:
        f["observations/images/cam_left_wrist"][11] = np.frombuffer(b"\xff\xd8\xff\xe0 broken", np.uint8)
    report = import_seed(tmp_path / "seed", tmp_path / "dst")
    assert not report.done and "camera cam_left_wrist frame 11" in report.skipped[str(src)]
    assert not list((tmp_path / "dst").rglob("*.hdf5*"))             # no half-written file left behind


# --- export to the variant the seed's converter reads ----------------------------------------------------------
def test_seed_converter_reads_our_exported_files(tmp_path, capsys):
    """Our files (written by our layout, ego_cam as JPEG bytes) fail in the seed converter's reading logic; exported
    with export-seed they load, and hold the same data."""
    import cv2

    from h1_training.cli import main

    ours = L.session_dir(tmp_path / "h1_data", 3)
    for i in range(2):
        ep = make_episode(T, 64, 48, fps=50.0, seed=i)
        ep.attrs[L.ATTR_SUCCESS] = i                                 # labelled failed, then succeeded
        L.write_episode(ours / f"episode_{i}.hdf5", ep)
    # the issue: the seed assumes raw ego_cam, gets JPEG bytes, and resizes them as a 1-pixel-wide grey "image"
    # that its (224, 224, 3) image feature cannot take
    native = SW.seed_converter_load(ours / "episode_0.hdf5")["ego_cam"][0]
    assert native.ndim == 1 and SW.seed_converter_frame(native).shape != (224, 224, 3)

    out = tmp_path / "for_seed"
    assert main(["export-seed", str(ours), str(out)]) == 0
    assert "2 exported, 0 skipped" in capsys.readouterr().out
    for i in range(2):
        loaded = SW.seed_converter_load(out / ours.name / f"episode_{i}.hdf5")
        src = load_episode(ours / f"episode_{i}.hdf5")
        ego = loaded["ego_cam"]
        assert ego.dtype == np.uint8 and ego.shape == (T, 48, 64, 3)
        assert SW.seed_converter_frame(ego[0]).shape == (224, 224, 3)
        for k in (0, T - 1):
            ref = cv2.cvtColor(cv2.imdecode(np.frombuffer(src.images["ego_cam"][k], np.uint8), cv2.IMREAD_COLOR),
                               cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(ego[k], ref)
            wrist = loaded["cam_left_wrist"][k]                       # decoded with PIL, as the seed does
            ref_w = cv2.cvtColor(cv2.imdecode(np.frombuffer(src.images["cam_left_wrist"][k], np.uint8),
                                              cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert np.abs(wrist.astype(int) - ref_w.astype(int)).mean() < 2
        np.testing.assert_array_equal(loaded["qpos"], src.qpos)
        np.testing.assert_array_equal(loaded["actions"], src.action)
        assert loaded["advantage"] is bool(i)
        with h5py.File(out / ours.name / f"episode_{i}.hdf5", "r") as f:
            assert f["phase"].dtype == np.dtype("S10") and f.attrs["policy_frames"] == src.policy_frames
    # and our reader reads the exported variant back
    with open_episode(out / ours.name / "episode_0.hdf5") as ep:
        assert ep.variant.describe() == "seed converter layout, ego_cam raw RGB, wrists JPEG" and not ep.problems
    assert main(["export-seed", str(ours), str(out)]) == 1            # never overwrites
    assert "exists" in capsys.readouterr().out


def test_round_trip_seed_client_import_export(seed, tmp_path):
    """A seed client's file imported, then exported: the seed's reading logic gets the frames it wrote."""
    imported = import_seed(seed["client"], tmp_path / "h1")
    back = export_seed(find_sources(tmp_path / "h1"), tmp_path / "back")
    assert len(imported.done) == 1 and len(back.done) == 1 and not back.skipped
    loaded = SW.seed_converter_load(Path(back.done[0].dest))
    original = SW.seed_converter_load(seed["client"])
    assert loaded["ego_cam"].shape == original["ego_cam"].shape == (T, 224, 224, 3)
    diff = np.abs(loaded["ego_cam"].astype(int) - original["ego_cam"].astype(int))
    assert diff.mean() < 1.0                          # our decode of the same JPEG bytes vs PIL's (IDCT rounding)
    np.testing.assert_array_equal(loaded["qpos"], original["qpos"])
    assert loaded["advantage"] is True


def test_dataset_manager_export_format_seed(seed, tmp_path):
    cat = Catalog([seed["root"]], decode="none")
    raw = next(ds for ds in cat.refresh() if ds.name.endswith("epoch_2/raw"))
    result = export_dataset(raw, "seed", tmp_path / "exp")
    assert result.ok and result.episodes == 2 and result.frames == 2 * T, result.message
    assert {Path(s["path"]).name for s in result.skipped} == {"episode_2.hdf5", "episode_3.hdf5"}
    assert sorted(p.name for p in (tmp_path / "exp" / "raw").iterdir()) == ["episode_0.hdf5", "episode_1.hdf5"]
    assert SW.seed_converter_load(tmp_path / "exp" / "raw" / "episode_0.hdf5")["ego_cam"].shape == (T, 224, 224, 3)
    refused = export_dataset(raw, "seed", tmp_path / "exp")
    assert not refused.ok and "not empty" in refused.message
    assert CAMERA_NAMES[0] == "ego_cam"
