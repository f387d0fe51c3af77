"""dataset_manager as a real process, driven over ROS with the RoArm seed's names: the latched
/lerobot/dataset_list, /lerobot/refresh_datasets (std_srvs/Empty), /lerobot/get_episode_info and
/lerobot/export_dataset."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from std_srvs.srv import Empty

from h1_training.nodes.common import LATCHED_QOS
from h1_training.procs import resolve_executable
from h1_training.recording import layout as L
from h1_training.training.synthetic import make_episode
from h1_training_interfaces.msg import DatasetList
from h1_training_interfaces.srv import ExportDataset, GetEpisodeInfo

pytestmark = pytest.mark.timeout(120)


def write(root: Path, index: int, frames: int = 60) -> Path:
    return L.write_episode(L.episode_path(root, 1, index), make_episode(frames, 32, 24, seed=index))


def test_refresh_list_episode_info_and_export(procs, probe, tmp_path):
    root = tmp_path / "data"
    write(root, 0)
    write(root, 1)
    bad = write(root, 2)
    bad.write_bytes(bad.read_bytes()[:2000])  # cut short
    exports = tmp_path / "exports"
    cap = probe.capture(DatasetList, "/lerobot/dataset_list", LATCHED_QOS)
    procs.start("dataset_manager", [*resolve_executable("dataset_manager"), "--ros-args",
                                    "-p", f"roots:=['{root}']", "-p", f"export_dir:={exports}",
                                    "-p", "refresh_period_s:=0"])

    # the start-up scan is published, latched
    first = cap.wait(where=lambda m: len(m.datasets) == 1, timeout=40)
    ds = first.datasets[0]
    assert (ds.name, ds.path, ds.format) == ("training_session_epoch1", str(root / "training_session_epoch1"), "hdf5")
    assert ds.num_episodes == 3 and ds.total_frames == 120 and ds.fps == 50.0 and ds.success_rate == -1.0
    assert ds.quality_score == pytest.approx(200 / 3, abs=0.1) and ds.size_mb > 0 and ds.created.sec > 0
    assert ds.problems[0].startswith("episode_2.hdf5: 0 (-100 contract:")

    # refresh_period_s 0: a new episode shows only after /lerobot/refresh_datasets, which returns once published
    write(root, 3, frames=40)
    time.sleep(0.5)
    assert cap.last().datasets[0].num_episodes == 3
    probe.call(Empty, "/lerobot/refresh_datasets", Empty.Request(), timeout=30)
    latest = cap.wait(where=lambda m: m.datasets and m.datasets[0].num_episodes == 4, timeout=5).datasets[0]
    assert latest.total_frames == 160
    late = probe.capture(DatasetList, "/lerobot/dataset_list", LATCHED_QOS)  # `ros2 topic echo` started now
    assert late.wait(timeout=10).datasets[0].num_episodes == 4

    def info(dataset: str, index: int) -> GetEpisodeInfo.Response:
        return probe.call(GetEpisodeInfo, "/lerobot/get_episode_info",
                          GetEpisodeInfo.Request(dataset=dataset, index=index), timeout=15)

    r = info("training_session_epoch1", 9)
    assert not r.success and "out of range" in r.message and "4 episode(s) (0..3)" in r.message
    r = info("epoch7", 0)
    assert not r.success and "no dataset 'epoch7'" in r.message and "training_session_epoch1" in r.message
    r = info("training_session_epoch1", 2)
    assert r.success and r.episode.quality_score == 0.0 and r.episode.frames == 0
    assert r.episode.problems[0].startswith("-100 contract:") and r.episode.path == str(bad)
    r = info(str(root / "training_session_epoch1"), 3)  # by path as well
    assert r.success and r.episode.frames == 40 and r.episode.quality_score == 70.0
    assert r.episode.model_version == "synthetic-v0" and r.episode.success == -1
    assert r.episode.problems == ["-30 short: 40 frames, 0.80 s (< 1 s)"]

    # export hdf5 into the default folder: the valid episodes appear there
    r = probe.call(ExportDataset, "/lerobot/export_dataset",
                   ExportDataset.Request(dataset="training_session_epoch1", format="hdf5", output_path=""), timeout=60)
    assert r.success, r.message
    out = Path(r.output_path)
    assert out.parent == exports and out.name.startswith("training_session_epoch1_hdf5_")
    assert sorted(p.name for p in (out / "training_session_epoch1").iterdir()) == [
        "episode_0.hdf5", "episode_1.hdf5", "episode_3.hdf5"]
    assert "skipped 1" in r.message and "episode_2.hdf5" in r.message
    again = probe.call(ExportDataset, "/lerobot/export_dataset",
                       ExportDataset.Request(dataset="training_session_epoch1", format="hdf5",
                                             output_path=str(out)), timeout=30)
    assert not again.success and "not empty" in again.message and again.output_path == ""
    r = probe.call(ExportDataset, "/lerobot/export_dataset",
                   ExportDataset.Request(dataset="training_session_epoch1", format="csv"), timeout=30)
    assert not r.success and "format must be one of lerobot, hdf5" in r.message
    # containment: the service writes inside export_dir only, whatever output_path says
    outside = tmp_path / "outside"
    outside.mkdir()
    (exports / "link").symlink_to(outside, target_is_directory=True)
    for asked in ("../outside/x", str(outside / "x"), "link/x", str(exports / "link" / "x"), str(exports), "/"):
        r = probe.call(ExportDataset, "/lerobot/export_dataset",
                       ExportDataset.Request(dataset="training_session_epoch1", format="hdf5", output_path=asked),
                       timeout=30)
        assert not r.success and "outside the export folder" in r.message, (asked, r.message)
    assert list(outside.iterdir()) == []
    r = probe.call(ExportDataset, "/lerobot/export_dataset",  # relative: inside export_dir
                   ExportDataset.Request(dataset="training_session_epoch1", format="hdf5", output_path="mine"),
                   timeout=30)
    assert r.success and r.output_path == str((exports / "mine").resolve()), r.message
    assert procs.exited() == []
