"""episode_recorder as a real process fed over ROS topics: record via its services, crash it with kill -9,
stop it with SIGINT, give it an unwritable folder and a full disk (a file-size limit), and record from the real
simulated robot stack when its executables exist."""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from h1_training.nodes.common import LATCHED_QOS
from h1_training.procs import resolve_executable
from h1_training.recording import layout as L
from h1_training.recording.repair import repair_all
from h1_training.robot_model import CAMERA_NAMES
from h1_training_interfaces.msg import RecorderStatus
from h1_training_interfaces.srv import SaveEpisode, StartEpisode

pytestmark = pytest.mark.timeout(180)

# small frames keep the shared 2-core machine light; the benchmark uses 640x480 @ 30 fps
FEED = ["--width", "320", "--height", "240", "--fps", "15", "--frames", "8"]


def start_feed(procs, modes: str = "TRACK"):
    return procs.start("feed", [sys.executable, "-m", "h1_training.nodes.sim.bench_feed", *FEED, "--modes", modes])


def start_recorder(procs, save_dir, *params: str, prefix: tuple[str, ...] = ()):
    args = ["--ros-args", "-p", f"save_dir:={save_dir}"]
    for p in params:
        args += ["-p", p]
    return procs.start("episode_recorder", [*prefix, *resolve_executable("episode_recorder"), *args])


def ready(probe, status_cap=None, fresh: bool = True):
    probe.wait_for_service("/episode_recorder/start", timeout=30)
    probe.wait_for_service("/episode_recorder/save", timeout=30)
    if fresh:  # every source delivering (the feed is up)
        status_cap.wait(where=lambda m: not m.stale_sources, timeout=30)


def start(probe, epoch=1, index=-1, prompt="pick up the cup"):
    return probe.call(StartEpisode, "/episode_recorder/start",
                      StartEpisode.Request(epoch=epoch, episode_index=index, prompt=prompt), timeout=15)


def save(probe, discard=False, label=-1):
    return probe.call(SaveEpisode, "/episode_recorder/save",
                      SaveEpisode.Request(discard=discard, success_label=label), timeout=15)


def check_contract(path: Path) -> h5py.File:
    """Dataset by dataset against DESIGN.md §4 with plain h5py; returns the open file."""
    f = h5py.File(path, "r")
    t = f["observations/qpos"].shape[0]
    assert t > 0
    assert f["observations/qpos"].shape == (t, 14) and f["observations/qpos"].dtype == np.float32
    for cam in CAMERA_NAMES:
        ds = f[f"observations/images/{cam}"]
        assert ds.shape == (t,) and h5py.check_vlen_dtype(ds.dtype) == np.dtype("uint8")
    assert f["action"].shape == (t, 14) and f["action"].dtype == np.float32
    assert f["phase"].shape == (t,) and h5py.check_string_dtype(f["phase"].dtype) is not None
    for attr in ("episode_length", "fps", "timestamp", "policy_frames", "human_frames"):
        assert attr in f.attrs, attr
    phase = np.array([p.decode() for p in f["phase"][:]])
    assert set(phase) <= {"policy", "human"}
    assert int(f.attrs["episode_length"]) == t and float(f.attrs["fps"]) == 50.0
    assert int(f.attrs["policy_frames"]) == int((phase == "policy").sum())
    assert int(f.attrs["human_frames"]) == int((phase == "human").sum())
    assert np.all(f["action"][:][phase == "human"] == 0)  # zeros during damping
    assert L.validate(f) == []
    return f


def decode_all(f: h5py.File) -> None:
    for cam in CAMERA_NAMES:
        for jpeg in f[f"observations/images/{cam}"][:]:
            img = cv2.imdecode(np.asarray(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.ndim == 3


def test_record_save_discard_via_services(procs, probe, tmp_path):
    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    start_feed(procs, modes="TRACK:1.2,DAMPING:1.2")
    start_recorder(procs, tmp_path)
    ready(probe, status)

    r = start(probe, epoch=1)
    assert r.success, r.message
    assert r.file_path == str(tmp_path / "training_session_epoch1" / "episode_0.hdf5") and r.episode_index == 0
    assert Path(r.file_path + ".partial").exists() and not Path(r.file_path).exists()  # temporary name while recording
    status.wait(where=lambda m: m.recording and m.frames > 50 and m.bytes_written > 0, timeout=10)
    time.sleep(1.5)
    s = save(probe, label=1)
    assert s.success, s.message
    path = Path(s.file_path)
    assert path.exists() and not Path(str(path) + ".partial").exists()

    with check_contract(path) as f:
        t = f.attrs["episode_length"]
        assert s.frames == t and s.policy_frames + s.human_frames == t
        assert s.policy_frames > 10 and s.human_frames > 10  # the feed switched TRACK -> DAMPING
        decode_all(f)
        phase = np.array([p.decode() for p in f["phase"][:]])
        versions = np.array([v.decode() for v in f["model_version"][:]])
        # a TRACK tick whose command went stale (the feed starved > stale_after_s on a loaded machine) is stored
        # as "hold here, no model": version "" (the sampler's contract); every other policy tick names the model
        policy_versions = versions[phase == "policy"]
        assert set(policy_versions) <= {"synthetic-v1", ""} and np.sum(policy_versions == "synthetic-v1") > 10
        assert set(versions[phase == "human"]) == {""}
        assert f["proposed_action_valid"][:][phase == "human"].any()  # policy_proposal during damping
        assert not f["proposed_action_valid"][:][phase == "policy"].any()
        assert f["observations/hand_state"].shape == (t, 12)
        assert np.all(np.diff(f["timestamps/sample_ns"][:]) > 0)
        assert all(f[f"timestamps/images/{c}"][-1] > 0 for c in CAMERA_NAMES)
        assert not any(f[f"quality/placeholder/{c}"][:].any() for c in CAMERA_NAMES)
        assert int(f.attrs["success"]) == 1 and f.attrs["prompt"] == "pick up the cup"
        assert int(f.attrs["epoch"]) == 1 and int(f.attrs["episode_index"]) == 0
        # the achieved rate is the file's own (samples over their time span), and every tick of that span is a
        # sample or a counted miss (how many a loaded machine misses is `bench recorder`'s figure)
        ns = f["timestamps/sample_ns"][:]
        assert float(f.attrs["achieved_rate_hz"]) == pytest.approx((t - 1) / ((ns[-1] - ns[0]) / 1e9), rel=1e-3)
        assert t + int(f.attrs["missed_ticks"]) >= round((ns[-1] - ns[0]) / 20e6)
    last = status.wait(where=lambda m: not m.recording and m.frames == s.frames, timeout=5)
    assert last.file_path == str(path) and last.error == ""

    # discard: nothing is left behind, the index is free again
    r = start(probe, epoch=1)
    assert r.success and r.episode_index == 1
    time.sleep(0.3)
    d = save(probe, discard=True)
    assert d.success, d.message
    assert sorted(p.name for p in path.parent.iterdir()) == ["episode_0.hdf5"]
    assert not save(probe).success  # nothing to save

    # a disk with less free space than min_free_mb: refused with the reason, on the reply and the status
    assert probe.set_parameter("episode_recorder", "min_free_mb", 9_000_000.0).successful
    r = start(probe, epoch=1)
    assert not r.success and "disk almost full" in r.message
    err = status.wait(where=lambda m: m.state == RecorderStatus.STATE_ERROR, timeout=5)
    assert "disk almost full" in err.error


def test_kill9_ten_seconds_in_loses_at_most_one_second(procs, probe, tmp_path):
    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    start_feed(procs)
    rec = start_recorder(procs, tmp_path)
    ready(probe, status)
    r = start(probe, epoch=2)
    assert r.success, r.message
    status.wait(where=lambda m: m.recording and m.frames > 0, timeout=10)
    time.sleep(10.0)
    kill_wall_ns = time.time_ns()
    rec.signal(signal.SIGKILL)
    rec.proc.wait(timeout=10)
    final = Path(r.file_path)
    assert not final.exists() and Path(str(final) + ".partial").exists()

    procs.children.remove(rec)
    status.clear()
    start_recorder(procs, tmp_path)  # repairs at start-up, before its first status message
    status.wait(count=1, timeout=30)
    assert final.exists() and not Path(str(final) + ".partial").exists()
    with check_contract(final) as f:
        assert bool(f.attrs["recovered"]) and "crash" in f.attrs["recovered_reason"]
        wall = f["timestamps/wall_ns"][:]
        lost_s = (kill_wall_ns - wall[-1]) / 1e9
        assert 0 <= lost_s <= 1.0, f"{lost_s:.3f} s of samples lost"
        # no gap inside: every tick from the first to the last sample is there (or counted as missed)
        span_ticks = round((f["timestamps/sample_ns"][-1] - f["timestamps/sample_ns"][0]) / 20e6) + 1
        assert len(wall) + int(f.attrs["missed_ticks"]) >= span_ticks - 1
        assert len(wall) >= 9 * 50
        decode_all(f)


def test_kill9_of_the_node_alone_its_writer_saves_what_it_received(procs, probe, tmp_path):
    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    start_feed(procs)
    rec = start_recorder(procs, tmp_path)
    ready(probe, status)
    r = start(probe, epoch=5)
    assert r.success, r.message
    status.wait(where=lambda m: m.recording and m.frames >= 100, timeout=15)
    kill_wall_ns = time.time_ns()
    rec.signal(signal.SIGKILL, group=False)  # the node only; its HDF5 writer process notices and saves
    final = Path(r.file_path)
    deadline = time.monotonic() + 10
    while not final.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    with check_contract(final) as f:
        assert f.attrs["end_reason"] == "orphaned" and bool(f.attrs["recovered"])
        assert (kill_wall_ns - f["timestamps/wall_ns"][-1]) / 1e9 <= 0.2  # nothing it had received was lost


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_mid_episode_saves_it(procs, probe, tmp_path, sig):
    """Ctrl+C in its terminal, or SIGTERM from `h1-training up`, systemd or docker stop: the episode is closed and
    valid, not left for repair."""
    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    start_feed(procs)
    rec = start_recorder(procs, tmp_path)
    ready(probe, status)
    r = start(probe, epoch=3, prompt="stop signal")
    assert r.success, r.message
    status.wait(where=lambda m: m.recording and m.frames >= 60, timeout=10)
    rec.signal(sig)
    assert rec.proc.wait(timeout=15) == 0, rec.output()
    final = Path(r.file_path)
    assert final.exists() and not Path(str(final) + ".partial").exists()
    with check_contract(final) as f:
        assert f.attrs["end_reason"] == "shutdown" and not bool(f.attrs["recovered"])
        assert f.attrs["episode_length"] >= 60


def test_unwritable_save_dir_is_an_error_on_reply_and_status(procs, probe, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where save_dir's parent should be")
    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    start_recorder(procs, blocker / "data")
    ready(probe, status, fresh=False)
    r = start(probe, epoch=1)
    assert not r.success and "not a folder" in r.message, r.message
    err = status.wait(where=lambda m: m.state == RecorderStatus.STATE_ERROR, timeout=5)
    assert "not a folder" in err.error and not err.recording


@pytest.mark.skipif(not Path("/usr/bin/prlimit").exists(), reason="needs util-linux prlimit")
def test_disk_full_mid_episode_is_reported_and_nothing_is_lost(procs, probe, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, as on a FAT32 stick or under ulimit -f) is reached mid-episode: the writer
    stops one batch before the kernel would refuse a write (a refused HDF5 write can leave an unreadable file),
    saves, and says why on the status and in the save reply."""
    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    start_feed(procs)
    start_recorder(procs, tmp_path, prefix=("prlimit", "--fsize=6000000", "--"))
    ready(probe, status)
    r = start(probe, epoch=4)
    assert r.success, r.message
    err = status.wait(where=lambda m: m.state == RecorderStatus.STATE_ERROR, timeout=30)
    assert "file size limit" in err.error and not err.recording
    s = save(probe)
    assert not s.success and "file size limit" in s.message and s.frames > 0
    # what was written is either saved or left for repair: a valid episode either way
    if not Path(r.file_path).exists():
        assert str(Path(r.file_path)) + ".partial" in s.message or s.file_path.endswith(".partial")
        (res,) = repair_all(tmp_path)
        assert res.ok, res.line()
    with check_contract(Path(r.file_path)) as f:
        assert f.attrs["episode_length"] > 0


def _missing_sim_modules() -> list[str]:
    from h1_training.bringup import load_profile
    from h1_training.executables import NODES as scripts  # the package's own table, not a stale install's

    missing = []
    for node in load_profile("sim").nodes:
        target = scripts.get(node.executable, "")
        module = target.partition(":")[0]
        if not module or importlib.util.find_spec(module) is None:
            missing.append(node.executable)
    return missing


def test_records_from_the_simulated_robot_stack(procs, probe, tmp_path):
    """The sim profile as is (emulators + real drivers + this recorder); skipped until its executables exist."""
    missing = _missing_sim_modules()
    if missing:
        pytest.skip(f"sim profile executables not available yet: {', '.join(missing)}")
    from h1_training.bringup import load_profile, start_profile

    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    from test_hil_session import SEED_NODES  # the robot side only: the seed nodes play no part here

    start_profile(procs, load_profile("sim"), {"episode_recorder": ["-p", f"save_dir:={tmp_path}"]}, skip=SEED_NODES)
    probe.wait_for_service("/episode_recorder/start", timeout=60)
    status.wait(where=lambda m: not [s for s in m.stale_sources if s != "arm/mode"], timeout=60)
    r = start(probe, epoch=1)
    assert r.success, r.message
    status.wait(where=lambda m: m.recording and m.frames >= 150, timeout=20)
    s = save(probe, label=0)
    assert s.success, s.message
    with check_contract(Path(s.file_path)) as f:
        decode_all(f)
        t = f.attrs["episode_length"]
        assert np.abs(f["observations/qpos"][:]).sum() > 0  # real joint states, not zeros
        for cam in CAMERA_NAMES:  # camera_sim serves all three over ZMQ: real frames, not placeholders
            assert f[f"quality/stale/{cam}"][:].mean() < 0.1, cam
            assert f[f"quality/placeholder/{cam}"][:].mean() < 0.1, cam
        # a hand reading older than the hand node's stale_after_s is published as NaN (never frozen): a starved
        # Modbus poll on a loaded machine leaves a few such rows, flagged stale (bounded below)
        assert f["observations/hand_state"].shape == (t, 12) and np.nanmax(f["observations/hand_state"][:]) > 0
        assert f["quality/stale/qpos"][:].mean() < 0.1 and f["quality/stale/hand_state"][:].mean() < 0.1


def test_a_silent_stream_with_a_publisher_is_subscribed_again(procs, probe, tmp_path):
    """bench recorder-kill: a recorder restarted after kill -9 once stayed deaf to cameras that were publishing.
    A stream silent for resubscribe_after_s while the graph shows its publisher gets a new subscription (logged);
    a stream with no publisher is left alone; once frames flow, nothing more is done."""
    from sensor_msgs.msg import CompressedImage

    from h1_training.nodes.common import SENSOR_QOS

    status = probe.capture(RecorderStatus, "/episode_recorder/status", LATCHED_QOS)
    publisher = probe.publisher(CompressedImage, "/camera/ego_cam/compressed", SENSOR_QOS)  # silent for now
    rec = start_recorder(procs, tmp_path, "resubscribe_after_s:=1.0")
    ready(probe, status, fresh=False)
    silent = "camera/ego_cam/compressed: nothing received for 1 s although the graph shows 1 publisher(s)"
    procs.wait_for_line("episode_recorder", lambda line: silent in line and "subscribed again" in line, 20)

    ok, jpeg = cv2.imencode(".jpg", np.zeros((24, 32, 3), np.uint8))
    msg = CompressedImage(format="jpeg", data=jpeg.tobytes())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the probe's clock stamps each frame; the recorder keeps the latest
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        publisher.publish(msg)
        if status.last() is not None and "camera/ego_cam" not in status.last().stale_sources:
            break
        time.sleep(0.05)
    assert "camera/ego_cam" not in status.last().stale_sources, status.last().stale_sources
    for _ in range(30):  # 1.5 s of frames: more than the period, and no new resubscription of a live stream
        msg.header.stamp = probe.node.get_clock().now().to_msg()
        publisher.publish(msg)
        time.sleep(0.05)
    lines = rec.output().splitlines()
    assert not [line for line in lines if "cam_left_wrist/compressed: nothing received" in line]  # no publisher
    resubscribed = [line for line in lines if silent in line]
    assert resubscribed, rec.output()
    assert "camera/ego_cam" not in status.last().stale_sources
    later = [line for line in rec.output().splitlines() if silent in line]
    assert later == resubscribed
