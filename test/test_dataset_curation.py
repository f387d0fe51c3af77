"""dataset_manager's second half: names from requests validated (``../``, absolute paths, symlinks out of the root),
trash and restore, "exclude from training" honoured by training, MCAP export read back with the ``mcap`` reader,
playback timing (mechanism: absolute deadlines) and, over ROS, the /playback/* and /lerobot/* services."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from std_srvs.srv import Trigger

from h1_training.datasets.catalog import Catalog
from h1_training.datasets.export import export_dataset
from h1_training.datasets.paths import PathRefused, check_name, inside, restore_episode, trash_episode
from h1_training.datasets.playback import PlaybackClock, Player
from h1_training.nodes.common import LATCHED_QOS, SENSOR_QOS
from h1_training.procs import resolve_executable
from h1_training.recording import layout as L
from h1_training.training.convert import find_episodes
from h1_training.training.scripted_fit import episode_files
from h1_training.training.synthetic import make_episode

pytestmark = pytest.mark.timeout(180)


def write(root: Path, index: int, frames: int = 60, epoch: int = 1) -> Path:
    return L.write_episode(L.episode_path(root, epoch, index), make_episode(frames, 32, 24, seed=index))


def test_names_from_requests_cannot_leave_the_root(tmp_path) -> None:
    root = tmp_path / "data"
    ep = write(root, 0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = write(outside, 0)
    for bad in ("../elsewhere", "a/../../b", "/etc/passwd", "~/x", "", "a\x00b"):
        with pytest.raises(PathRefused):
            check_name(bad)
    assert str(check_name("training_session_epoch1/episode_0.hdf5")) == "training_session_epoch1/episode_0.hdf5"
    assert inside(ep, [root]) == ep.resolve()
    with pytest.raises(PathRefused, match="outside"):
        inside(root / ".." / "elsewhere", [root])
    link = root / "linked"
    link.symlink_to(outside, target_is_directory=True)  # a folder in the root that points out of it
    with pytest.raises(PathRefused, match="outside"):
        inside(link / "training_session_epoch1" / "episode_0.hdf5", [root])
    with pytest.raises(PathRefused):
        trash_episode(link / "training_session_epoch1" / "episode_0.hdf5", [root])
    with pytest.raises(PathRefused):
        restore_episode("../../elsewhere/training_session_epoch1/episode_0.hdf5", [root])
    assert secret.exists()


def test_trash_and_restore_keep_everything(tmp_path) -> None:
    root = tmp_path / "data"
    ep = write(root, 3)
    L.set_excluded(ep, True, "bumped the table")
    data = ep.read_bytes()
    entry = trash_episode(ep, [root])
    assert not ep.exists() and not L.exclude_marker(ep).exists()
    trashed = root / ".trash" / entry
    assert trashed.read_bytes() == data and L.is_excluded(trashed)
    assert [d.name for d in Catalog([root], decode="none").refresh()] == []  # the trash is not a dataset
    write(root, 3)  # a new recording took the name meanwhile: restore refuses to overwrite it
    with pytest.raises(PathRefused, match="exists now"):
        restore_episode(entry, [root])
    ep.unlink()
    assert restore_episode(entry, [root]) == ep.resolve()
    assert ep.read_bytes() == data and L.is_excluded(ep) and not trashed.exists()


def test_exclude_from_training_is_honoured_by_the_trainers_episode_search(tmp_path) -> None:
    root = tmp_path / "data"
    eps = [write(root, i) for i in range(3)]
    L.set_excluded(eps[1], True)
    session = L.session_dir(root, 1)
    assert find_episodes([session]) == [eps[0], eps[2]]
    assert episode_files([session]) == [eps[0], eps[2]]
    L.set_excluded(eps[1], False)
    assert len(find_episodes([session])) == 3


def test_mcap_export_holds_every_frame_with_images(tmp_path) -> None:
    root = tmp_path / "data"
    write(root, 0, frames=50)
    write(root, 1, frames=30)
    bad = write(root, 2)
    bad.write_bytes(bad.read_bytes()[:1000])
    (ds,) = Catalog([root]).refresh()
    result = export_dataset(ds, "mcap", tmp_path / "out")
    assert result.ok and result.episodes == 2 and result.frames == 80, result.message
    files = sorted((tmp_path / "out" / "training_session_epoch1").glob("*.mcap"))
    assert [f.name for f in files] == ["episode_0.mcap", "episode_1.mcap"]
    source = L.read_episode(L.episode_path(root, 1, 0))
    counts: dict[str, int] = {}
    first_image = None
    stamps = []
    with open(files[0], "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, message, ros_msg in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/camera/ego_cam/compressed" and first_image is None:
                first_image = bytes(ros_msg.data)
            if channel.topic == "/joint_states":
                stamps.append(message.log_time)
                if len(stamps) == 1:
                    assert np.allclose(ros_msg.position, source.qpos[0], atol=1e-6)
                    assert ros_msg.name[0] == "left_shoulder_pitch_joint"
    assert counts["/joint_states"] == counts["/action"] == 50
    assert all(counts[f"/camera/{c}/compressed"] == 50 for c in ("ego_cam", "cam_left_wrist", "cam_right_wrist"))
    assert first_image == bytes(source.images["ego_cam"][0])
    assert np.allclose(np.diff(stamps), 20e6, rtol=0.01)  # 50 Hz spacing kept


def test_playback_deadlines_are_absolute_so_a_60_s_episode_keeps_its_rate(tmp_path) -> None:
    # mechanism: frame k is due at anchor + k / (fps * speed) whatever happened to frame k-1, so lateness does not
    # accumulate; a 60 s episode played at 20x (3 s here) shows the rate a 1x playback keeps (bench: datasets)
    clk = PlaybackClock(fps=50.0, frames=3000, speed=1.0)
    clk.rebase(100.0, 0)
    assert clk.due_time(2999) == pytest.approx(100.0 + 59.98)
    assert clk.due_frame(100.0 + 30.0) == 1500
    path = L.write_episode(L.episode_path(tmp_path, 0, 0), make_episode(3000, 16, 12, human_span=None))
    times: list[float] = []
    player = Player(lambda f: times.append(time.monotonic()))
    try:
        player.load(path, "d", 0, speed=20.0, autoplay=True)
        deadline = time.monotonic() + 60
        while player.state.name != "FINISHED" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert player.state.name == "FINISHED"
    finally:
        player.close()
    frames = len(times) + player.skipped
    assert frames == 3000
    if player.skipped == 0:  # an overloaded machine may skip; the frame count above still holds
        # lateness (emission time - due time, frame 0 as the anchor) never accumulates past the player's skip
        # limit: a player that slept 1/rate after each frame would drift by its per-frame overhead x 3000. The
        # rate itself is a bench figure (bench datasets), not asserted here: a loaded 2-core machine moves it.
        lateness = np.asarray(times) - times[0] - np.arange(len(times)) / 1000.0
        assert lateness.min() > -0.002, "a frame left before it was due"
        assert lateness.max() <= player.max_lag_s + 0.1, lateness.max()


def test_playback_and_curation_services_over_ros(procs, probe, tmp_path) -> None:
    from sensor_msgs.msg import CompressedImage, JointState

    from h1_training_interfaces.msg import DatasetList, PlaybackStatus
    from h1_training_interfaces.srv import EpisodeAction, ExportDataset, PlaybackLoad, PlaybackSeek, PlaybackStep

    root = tmp_path / "data"
    for i in range(3):
        write(root, i, frames=100)
    exports = tmp_path / "exports"
    status = probe.capture(PlaybackStatus, "/playback/status", LATCHED_QOS)
    joints = probe.capture(JointState, "/playback/joint_states", SENSOR_QOS)
    images = probe.capture(CompressedImage, "/playback/camera/ego_cam/compressed", SENSOR_QOS)
    lists = probe.capture(DatasetList, "/lerobot/dataset_list", LATCHED_QOS)
    procs.start("dataset_manager", [*resolve_executable("dataset_manager"), "--ros-args",
                                    "-p", f"roots:=['{root}']", "-p", f"export_dir:={exports}",
                                    "-p", "refresh_period_s:=0"])
    lists.wait(where=lambda m: m.datasets and m.datasets[0].num_episodes == 3, timeout=60)
    assert status.wait(timeout=20).state_name == "IDLE"

    def call(srv, name, **kw):
        return probe.call(srv, name, srv.Request(**kw), timeout=20)

    r = call(PlaybackLoad, "/playback/load", dataset="../elsewhere", index=0, speed=1.0, autoplay=False)
    assert not r.success and "'..' is refused" in r.message
    r = call(PlaybackLoad, "/playback/load", dataset="training_session_epoch1", index=7)
    assert not r.success and "out of range" in r.message
    r = call(PlaybackLoad, "/playback/load", dataset="training_session_epoch1", index=1, speed=4.0, autoplay=True)
    assert r.success and r.status.frames == 100 and r.status.fps == 50.0
    done = status.wait(where=lambda m: m.state_name == "FINISHED", timeout=30)
    assert done.frame == 100 and done.speed == 4.0
    joints.wait(count=50, timeout=10)
    assert len(joints) + 0 >= 50 and len(images) >= 50
    r = call(PlaybackSeek, "/playback/seek", frame=-1, time_s=1.0)
    assert r.success and r.status.frame == 51 and r.status.time_s == pytest.approx(1.0)
    r = call(PlaybackStep, "/playback/step", frames=-1)
    assert r.success and r.status.state_name == "PAUSED" and r.status.time_s == pytest.approx(0.98)
    assert call(Trigger, "/playback/play").success
    assert call(Trigger, "/playback/pause").success
    r = call(PlaybackSeek, "/playback/seek", frame=500)
    assert not r.success and "outside 0..99" in r.message

    # exclude, delete to the trash, restore; MCAP export refuses names outside export_dir
    r = call(EpisodeAction, "/lerobot/set_episode_excluded", dataset="training_session_epoch1", index=2, value=True,
             note="bumped")
    assert r.success and L.is_excluded(r.path)
    r = call(EpisodeAction, "/lerobot/delete_episode", dataset="training_session_epoch1", index=0)
    assert r.success and (root / ".trash" / r.path).is_file()
    lists.wait(where=lambda m: m.datasets and m.datasets[0].num_episodes == 2, timeout=20)
    r = call(EpisodeAction, "/lerobot/restore_episode", dataset=r.path)
    assert r.success and Path(r.path).name == "episode_0.hdf5"
    r = call(EpisodeAction, "/lerobot/restore_episode", dataset="../../etc")
    assert not r.success
    r = call(ExportDataset, "/lerobot/export_dataset", dataset="training_session_epoch1", format="mcap",
             output_path="../escape")
    assert not r.success and "refused" in r.message
    r = call(ExportDataset, "/lerobot/export_dataset", dataset="training_session_epoch1", format="mcap",
             output_path="")
    assert r.success and len(list(Path(r.output_path).rglob("*.mcap"))) == 3, r.message
    assert procs.exited() == []
