"""HDF5 (seed format, written with layout.write_episode) -> LeRobotDataset v3: loads with LeRobot's own
``LeRobotDataset(..., video_backend="pyav")``, trains a LeRobot ACT step, carries the recorded fps, derives
human-phase actions from the trajectory, and skips bad episodes with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from h1_training.recording import layout
from h1_training.training.convert import convert_sessions, derive_actions, find_episodes
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, make_episode

torch = pytest.importorskip("torch")
pytest.importorskip("lerobot")

W, H, T = 64, 48, 30
REPO = "local/h1_training"


def _write(path: Path, ep: layout.Episode) -> Path:
    return layout.write_episode(path, ep)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> dict[str, Path]:
    """One session folder with two good episodes and one of each kind of bad one."""
    save_dir = tmp_path_factory.mktemp("save")
    paths: dict[str, Path] = {}

    def put(name: str, index: int, ep: layout.Episode) -> Path:
        paths[name] = _write(layout.episode_path(save_dir, 1, index), ep)
        return paths[name]

    put("good0", 0, make_episode(T, W, H, seed=0))
    truncated = put("truncated", 1, make_episode(T, W, H, seed=1))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # a copy cut short
    bad_jpeg = make_episode(T, W, H, seed=2)
    bad_jpeg.images["cam_left_wrist"][12] = b"\xff\xd8\xff\xe0 not really a jpeg"
    put("bad_jpeg", 2, bad_jpeg)  # fails mid-episode, after frames went to the encoder
    put("good3", 3, make_episode(T, W, H, seed=3, human_span=(0.5, 1.0)))
    put("fps30", 4, make_episode(T, W, H, fps=30.0, seed=4))
    missing = layout.episode_path(save_dir, 1, 5)
    with h5py.File(missing, "w") as f:  # only qpos: breaks the contract
        f.create_dataset(layout.QPOS, data=np.zeros((T, 14), np.float32))
    paths["missing"] = missing
    nan_ep = make_episode(T, W, H, seed=6)
    nan_ep.qpos[3, 2] = np.nan
    put("nan", 6, nan_ep)
    empty = make_episode(T, W, H, seed=7)
    empty.images["ego_cam"][20] = b""
    put("empty_frame", 7, empty)
    paths["save_dir"] = save_dir
    paths["session"] = layout.session_dir(save_dir, 1)
    return paths


@pytest.fixture(scope="module")
def converted(session, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    summary = convert_sessions([session["session"]], out, repo_id=REPO, workers=2, progress=False)
    return out, summary


def test_derive_actions_from_trajectory():
    qpos = np.arange(6 * 14, dtype=np.float32).reshape(6, 14)
    action = np.full((6, 14), 7.0, np.float32)
    phase = ["policy", "human", "human", "policy", "policy", "human"]
    action[[1, 2, 5]] = 0.0          # the seed records zeros while the human is in control
    action[4] = 0.0                  # a policy tick with no recorded command
    out, intervention, derived = derive_actions(qpos, action, phase, lookahead=1)
    np.testing.assert_array_equal(out[0], action[0])          # policy frames keep their command
    np.testing.assert_array_equal(out[3], action[3])
    np.testing.assert_array_equal(out[1], qpos[2])            # human: where the arm went next
    np.testing.assert_array_equal(out[2], qpos[3])
    np.testing.assert_array_equal(out[4], qpos[5])            # empty policy row: derived too
    np.testing.assert_array_equal(out[5], qpos[5])            # the last frame holds its position
    assert intervention.tolist() == [0, 1, 1, 0, 0, 1]
    assert derived.tolist() == [False, True, True, False, True, True]
    out3, _, _ = derive_actions(qpos, action, phase, lookahead=3)
    np.testing.assert_array_equal(out3[1], qpos[4])
    np.testing.assert_array_equal(out3[2], qpos[5])           # clamped at the end
    with pytest.raises(ValueError):
        derive_actions(qpos, action, phase, lookahead=0)


def test_bad_episodes_are_skipped_with_reasons(session, converted):
    _, summary = converted
    assert summary.episodes == 2 and summary.frames == 2 * T
    assert summary.sources == [str(session["good0"]), str(session["good3"])]
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert len(reasons) == 6, reasons
    assert "not a readable HDF5" in reasons[session["truncated"].name]
    assert "undecodable JPEG" in reasons[session["bad_jpeg"].name] and "cam_left_wrist" in reasons["episode_2.hdf5"]
    assert "30 Hz" in reasons[session["fps30"].name] and "50 Hz" in reasons["episode_4.hdf5"]
    assert "missing dataset" in reasons[session["missing"].name]
    assert "NaN" in reasons[session["nan"].name]
    assert "empty frame" in reasons[session["empty_frame"].name]


def test_dataset_loads_with_lerobot_and_keeps_real_fps(session, converted):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out, summary = converted
    ds = LeRobotDataset(REPO, root=out, video_backend="pyav")
    assert ds.fps == 50 and summary.fps == 50 and summary.recorded_fps == 50.0
    assert ds.num_episodes == 2 and ds.num_frames == 2 * T
    for cam in ("cam_head", "cam_left_wrist", "cam_right_wrist"):
        assert ds.features[f"observation.images.{cam}"]["shape"] == (H, W, 3)
    # the last frame of the episode converted after the one aborted mid-way decodes: videos and rows line up
    last = ds[ds.num_frames - 1]
    assert last["observation.images.cam_head"].shape == (3, H, W)
    src = layout.read_episode(session["good3"])
    import cv2

    ref = cv2.imdecode(np.frombuffer(src.images["ego_cam"][-1], np.uint8), cv2.IMREAD_COLOR_RGB)
    got = (last["observation.images.cam_head"].numpy().transpose(1, 2, 0) * 255).astype(np.float32)
    assert np.abs(got - ref.astype(np.float32)).mean() < 25  # lossy H.264 of the same picture (RGB order kept)
    np.testing.assert_allclose(last["observation.state"].numpy(), src.qpos[-1], atol=1e-6)

    # human frames: action = next qpos, flagged in the intervention column
    cols = ds.hf_dataset.with_format("numpy")
    actions, states = np.asarray(cols["action"]), np.asarray(cols["observation.state"])
    intervention = np.asarray(cols["intervention"]).reshape(-1)
    ep0 = layout.read_episode(session["good0"], with_images=False)
    human = np.array([p == "human" for p in ep0.phase])
    assert intervention[:T].tolist() == human.astype(int).tolist()
    idx = np.flatnonzero(human)
    np.testing.assert_allclose(actions[idx], states[np.minimum(idx + 1, T - 1)], atol=1e-6)
    np.testing.assert_allclose(actions[:T][~human], ep0.action[~human], atol=1e-6)  # policy frames kept
    provenance = json.loads((out / "h1_conversion.json").read_text())
    assert provenance["episodes"] == 2 and len(provenance["skipped"]) == 6


def test_image_statistics_from_strided_frames_match_the_pixels(session, converted):
    """The converter takes LeRobot's per-frame image statistics on frames strided to 80 px (the bench's profile:
    they cost more than the encoding). They still estimate the pixels' per-channel mean; LeRobot's own
    downsampler is back in place afterwards."""
    import cv2
    from lerobot.datasets import compute_stats
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from h1_training.training.convert import _stats_downsample

    out, _ = converted
    stats = LeRobotDataset(REPO, root=out, video_backend="pyav").meta.stats["observation.images.cam_head"]
    frames = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR_RGB).astype(np.float32) / 255.0
              for name in ("good0", "good3") for b in layout.read_episode(session[name]).images["ego_cam"]]
    pixels = np.stack(frames).reshape(-1, 3)
    np.testing.assert_allclose(np.asarray(stats["mean"]).reshape(3), pixels.mean(axis=0), atol=0.02)
    assert compute_stats.auto_downsample_height_width is not _stats_downsample
    assert _stats_downsample(np.zeros((3, 480, 640), np.uint8)).shape == (3, 60, 80)
    assert _stats_downsample(np.zeros((3, 224, 224), np.uint8)).shape == (3, 75, 75)


def test_lerobot_act_training_step_runs_on_the_dataset(converted):
    """Plain LeRobot (make_policy / make_pre_post_processors), not our trainer: the dataset is LeRobot's own."""
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    torch.manual_seed(0)
    out, _ = converted
    meta = LeRobotDatasetMetadata(REPO, root=out)
    cfg = ACTConfig(device="cpu", pretrained_backbone_weights=None, **TINY_POLICY_OPTIONS["act"])
    policy = make_policy(cfg, ds_meta=meta)
    pre, _ = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    ds = LeRobotDataset(REPO, root=out, delta_timestamps=resolve_delta_timestamps(cfg, meta), video_backend="pyav")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    loss, info = policy.forward(pre(batch))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and "l1_loss" in info
    assert batch["action"].shape == (4, TINY_POLICY_OPTIONS["act"]["chunk_size"], 14)


def test_fps_is_the_recorded_one(session, tmp_path):
    summary = convert_sessions([session["fps30"]], tmp_path / "ds30", repo_id=REPO, progress=False)
    assert summary.fps == 30 and summary.episodes == 1
    info = json.loads((tmp_path / "ds30" / "meta" / "info.json").read_text())
    assert info["fps"] == 30


def test_all_bad_leaves_no_dataset_and_existing_output_is_protected(session, tmp_path):
    out = tmp_path / "none"
    summary = convert_sessions([session["truncated"], session["missing"]], out, progress=False)
    assert summary.episodes == 0 and len(summary.skipped) == 2 and not out.exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        convert_sessions([session["good0"]], occupied, progress=False)
    with pytest.raises(FileNotFoundError):
        convert_sessions([tmp_path / "nowhere"], tmp_path / "x", progress=False)


def test_find_episodes_orders_and_ignores_partial(tmp_path):
    for i in (10, 2, 1):
        (layout.session_dir(tmp_path, 1) / f"episode_{i}.hdf5").parent.mkdir(parents=True, exist_ok=True)
        (layout.session_dir(tmp_path, 1) / f"episode_{i}.hdf5").write_bytes(b"")
    (layout.session_dir(tmp_path, 1) / "episode_11.hdf5.partial").write_bytes(b"")
    names = [p.name for p in find_episodes([tmp_path])]
    assert names == ["episode_1.hdf5", "episode_2.hdf5", "episode_10.hdf5"]


def test_cli_convert(session, tmp_path, capsys):
    from h1_training.cli import main

    out = tmp_path / "cli_ds"
    rc = main(["convert", str(session["good0"]), str(session["nan"]), str(out), "--no-progress", "--json",
               "--resize", "32x24"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes"] == 1 and summary["image_shape"] == [24, 32, 3] and summary["resized_frames"] == 3 * T
    assert len(summary["skipped"]) == 1
    assert main(["convert", str(session["missing"]), str(tmp_path / "cli_none"), "--no-progress"]) == 1


def test_plain_lerobot_writer_of_bench_convert_writes_the_same_dataset(tmp_path):
    """``bench convert``'s plain side (LeRobotDataset.create + add_frame + save_episode, LeRobot's defaults:
    PNG frames, libsvtav1) on the same episodes as ours: a dataset LeRobot loads, with our frame count and values."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from h1_training.bench.convert import write_plain

    for i in range(2):
        _write(layout.episode_path(tmp_path / "save", 1, i), make_episode(12, 64, 64, seed=10 + i))
    ours = convert_sessions([tmp_path / "save"], tmp_path / "ours", progress=False)
    plain = write_plain(tmp_path / "save", tmp_path / "plain")
    assert plain["frames"] == ours.frames == 24 and plain["episodes"] == ours.episodes == 2
    a = LeRobotDataset(REPO, root=tmp_path / "ours", video_backend="pyav")
    b = LeRobotDataset(REPO, root=tmp_path / "plain", video_backend="pyav")
    assert b.num_frames == a.num_frames == 24 and b.num_episodes == 2 and b.fps == a.fps
    assert b.meta.info["features"]["observation.images.cam_head"]["info"]["video.codec"] == "av1"
    for key in ("observation.state", "action", "intervention"):
        np.testing.assert_array_equal(np.asarray(a.hf_dataset.with_format("numpy")[key]),
                                      np.asarray(b.hf_dataset.with_format("numpy")[key]), err_msg=key)
    frame = b[23]  # the last frame decodes from the last episode's video
    assert frame["observation.images.cam_head"].shape == (3, 64, 64)
    # the same picture through two lossy codecs (AV1 and H.264 at CRF 30): close on average, not pixel for pixel
    gap = (frame["observation.images.cam_head"] - a[23]["observation.images.cam_head"]).abs().mean().item()
    other = (frame["observation.images.cam_head"] - a[0]["observation.images.cam_head"]).abs().mean().item()
    assert gap < 0.05 and gap < other / 2, (gap, other)
