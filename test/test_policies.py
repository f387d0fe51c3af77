"""Policy types through the same train -> save -> load_policy -> infer path: CNN-LSTM (ours), Diffusion and ACT
(LeRobot). The served result is [H, 14] finite float32; a malformed observation is a ValueError saying why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from h1_training.policy.models import POLICY_TYPES, Policy, get_policy_type, load_policy, policy_type_of
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, write_session

torch = pytest.importorskip("torch")
pytest.importorskip("lerobot")

CAMS = ("cam_head", "cam_left_wrist", "cam_right_wrist")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> dict[str, Path]:
    from h1_training.training.convert import convert_sessions

    root = tmp_path_factory.mktemp("policies")
    write_session(root / "save", 1, episodes=2, frames=30, width=64, height=48)
    assert convert_sessions([root / "save"], root / "dataset", progress=False).episodes == 2
    return {"dataset": root / "dataset", "models": root / "models"}


def _train(workdir, policy_type: str, steps: int):
    from h1_training.training.registry import ModelRegistry
    from h1_training.training.trainer import TrainConfig, run_training

    info = run_training(TrainConfig(policy_type=policy_type, dataset_dir=workdir["dataset"],
                                    output_root=workdir["models"], steps=steps, batch_size=4, device="cpu",
                                    human_weight=2.0, extra=dict(TINY_POLICY_OPTIONS[policy_type])))
    return info, ModelRegistry(workdir["models"]).path(info.id)


def _obs(h: int = 480, w: int = 640, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"images": {c: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c in CAMS},
            "state": rng.uniform(-0.5, 0.5, 14).astype(np.float32), "prompt": "pick up the cup"}


def _check_actions(result: dict, horizon: int) -> None:
    actions = result["actions"]
    assert isinstance(actions, np.ndarray) and actions.dtype == np.float32
    assert actions.shape == (horizon, 14) and np.all(np.isfinite(actions))
    assert result["policy_timing"]["infer_ms"] > 0


def test_registry_of_types_is_the_one_place():
    assert set(POLICY_TYPES) == {"act", "diffusion", "cnn_lstm", "keypoint"}
    for name in POLICY_TYPES:
        assert get_policy_type(name).name == name
    with pytest.raises(ValueError, match="unknown policy type"):
        get_policy_type("transformer9000")


def test_cnn_lstm_trains_and_serves(workdir):
    info, path = _train(workdir, "cnn_lstm", steps=4)
    assert info.metrics["steps"] == 4 and info.metrics["final_loss"] < 10
    policy = load_policy(path)
    assert isinstance(policy, Policy)
    horizon = TINY_POLICY_OPTIONS["cnn_lstm"]["chunk_size"]
    assert policy.metadata["policy_type"] == "cnn_lstm" and policy.metadata["action_horizon"] == horizon
    assert policy.metadata["model_id"] == info.id and policy.metadata["fps"] == 50
    assert policy.metadata["cameras"] == list(CAMS)
    first = policy.infer(_obs(seed=1))
    _check_actions(first, horizon)
    # history: a different past changes the answer for the same current observation; reset() forgets it
    policy.reset()
    fresh = policy.infer(_obs(seed=2))["actions"]
    policy.reset()
    policy.infer(_obs(seed=3))
    with_history = policy.infer(_obs(seed=2))["actions"]
    assert not np.allclose(fresh, with_history)
    policy.reset()
    np.testing.assert_allclose(policy.infer(_obs(seed=2))["actions"], fresh, rtol=1e-5, atol=1e-5)
    # other camera resolutions are resized; CHW (openpi ALOHA style) and the recorder's ego_cam name are accepted
    _check_actions(policy.infer(_obs(h=96, w=128)), horizon)
    obs = _obs()
    obs["images"]["ego_cam"] = obs["images"].pop("cam_head")
    obs["images"]["cam_left_wrist"] = np.ascontiguousarray(obs["images"]["cam_left_wrist"].transpose(2, 0, 1))
    _check_actions(policy.infer(obs), horizon)


def test_keypoint_trains_serves_and_sees_only_its_camera(workdir):
    info, path = _train(workdir, "keypoint", steps=4)
    assert info.metrics["steps"] == 4 and np.isfinite(info.metrics["final_loss"])
    policy = load_policy(path)
    assert policy.metadata["policy_type"] == "keypoint" and policy.metadata["action_horizon"] == 10
    assert policy.metadata["cameras"] == ["cam_head"]  # the wrist cameras are not looked at
    obs = _obs(h=48, w=64, seed=1)
    first = policy.infer(obs)
    _check_actions(first, 10)
    wristless = {**obs, "images": {"cam_head": obs["images"]["cam_head"]}}
    np.testing.assert_allclose(policy.infer(wristless)["actions"], first["actions"], rtol=1e-5, atol=1e-5)
    moved = {**obs, "images": {"cam_head": np.roll(obs["images"]["cam_head"], 12, axis=1)}}
    assert not np.allclose(policy.infer(moved)["actions"], first["actions"])  # the pixels matter
    batch = policy.infer_batch([obs, moved])
    np.testing.assert_allclose(batch[0], first["actions"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o["images"].pop("cam_right_wrist"), "cam_right_wrist"),
    (lambda o: o.__setitem__("state", np.zeros(7, np.float32)), "14 numbers"),
    (lambda o: o["state"].__setitem__(3, np.nan), "NaN"),
    (lambda o: o["images"].__setitem__("cam_head", np.zeros((48, 64, 3), np.float32)), "uint8"),
    (lambda o: o["images"].__setitem__("cam_head", np.zeros((48, 64, 4), np.uint8)), "3 colour channels"),
    (lambda o: o.pop("images"), "images"),
    (lambda o: o.__setitem__("prompt", 5), "prompt"),
    (lambda o: o.pop("state"), "state"),
], ids=["no-camera", "short-state", "nan-state", "float-image", "4-channels", "no-images", "int-prompt", "no-state"])
def test_malformed_observation_is_a_clear_error(workdir, mutate, message):
    models = sorted((workdir["models"] / "models").glob("*cnn_lstm*"))
    path = models[-1] if models else _train(workdir, "cnn_lstm", steps=1)[1]
    policy = load_policy(path)
    obs = _obs(h=48, w=64)
    mutate(obs)
    with pytest.raises(ValueError, match=message):
        policy.infer(obs)
    _check_actions(policy.infer(_obs(h=48, w=64)), TINY_POLICY_OPTIONS["cnn_lstm"]["chunk_size"])  # still serving


def test_diffusion_trains_one_step_and_serves(workdir):
    info, path = _train(workdir, "diffusion", steps=1)
    assert info.config["policy"]["type"] == "diffusion" and info.config["policy"]["crop_shape"] is None
    policy = load_policy(path)
    horizon = TINY_POLICY_OPTIONS["diffusion"]["n_action_steps"]
    assert policy.metadata["action_horizon"] == horizon
    _check_actions(policy.infer(_obs(h=48, w=64)), horizon)
    _check_actions(policy.infer(_obs(h=48, w=64, seed=4)), horizon)  # second call: history queue in use


def _unet_calls(policy) -> list[int]:
    """Counts the denoiser's forward passes (one per sampling step) of a loaded Diffusion adapter."""
    calls = [0]
    policy.policy.diffusion.unet.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_diffusion_sampling_option_changes_scheduler_and_step_count(workdir):
    from diffusers import DDIMScheduler, DDPMScheduler

    from h1_training.policy.models.diffusion import parse_sampling
    from h1_training.serve.model_pool import ModelPool

    models = sorted((workdir["models"] / "models").glob("*diffusion*"))
    path = models[-1] if models else _train(workdir, "diffusion", steps=1)[1]
    obs = _obs(h=48, w=64)
    own = load_policy(path)  # the model's own config: DDPM, TINY_POLICY_OPTIONS' 3 steps
    calls = _unet_calls(own)
    own.infer(obs)
    assert isinstance(own.policy.diffusion.noise_scheduler, DDPMScheduler) and calls[0] == 3
    assert own.metadata["sampling"] == {"scheduler": "DDPMScheduler", "steps": 3}
    # served with --diffusion-sampling ddim:2: the pool loads it with DDIM, 2 denoiser passes per inference
    pool = ModelPool(workdir["models"], diffusion_sampling="ddim:2", default_model="scripted")
    ddim = pool.get(path.name).policy
    calls = _unet_calls(ddim)
    _check_actions(ddim.infer(obs), TINY_POLICY_OPTIONS["diffusion"]["n_action_steps"])
    assert isinstance(ddim.policy.diffusion.noise_scheduler, DDIMScheduler) and calls[0] == 2
    assert ddim.metadata["sampling"] == {"scheduler": "DDIMScheduler", "steps": 2}
    full = load_policy(path, diffusion_sampling="ddpm")  # no count: as many steps as training timesteps
    calls = _unet_calls(full)
    full.infer(obs)
    assert calls[0] == full.policy.config.num_train_timesteps == 100
    assert parse_sampling(" DDIM:10 ") == {"noise_scheduler_type": "DDIM", "num_inference_steps": 10}
    for bad in ("euler:5", "ddim:0", "ddim:x", ""):
        with pytest.raises(ValueError, match="ddpm|at least 1 step"):
            parse_sampling(bad)
    with pytest.raises(ValueError, match="num_train_timesteps"):  # at load, not at the first inference
        load_policy(path, diffusion_sampling="ddim:500")
    with pytest.raises(ValueError, match="ddim"):
        ModelPool(None, diffusion_sampling="fast")


def test_diffusion_sampling_at_training_is_saved_and_refused_for_other_types(workdir, capsys):
    from h1_training.training.trainer import main

    assert main(["--policy", "act", "--dataset", str(workdir["dataset"]), "--models", str(workdir["models"]),
                 "--diffusion-sampling", "ddim:10"]) == 2
    assert "--policy diffusion" in capsys.readouterr().err
    argv = ["--policy", "diffusion", "--dataset", str(workdir["dataset"]), "--models", str(workdir["models"]),
            "--steps", "1", "--batch-size", "2", "--device", "cpu", "--diffusion-sampling", "ddim:2", "--json"]
    for key, value in TINY_POLICY_OPTIONS["diffusion"].items():
        if key != "num_inference_steps":
            argv += ["--option", f"{key}={json.dumps(value)}"]
    assert main(argv) == 0
    from h1_training.training.registry import ModelRegistry

    path = ModelRegistry(workdir["models"]).path(json.loads(capsys.readouterr().out)["id"])
    config = json.loads((path / "config.json").read_text())
    assert (config["noise_scheduler_type"], config["num_inference_steps"]) == ("DDIM", 2)
    policy = load_policy(path)
    calls = _unet_calls(policy)
    policy.infer(_obs(h=48, w=64))
    assert calls[0] == 2


def test_act_serves_and_plain_lerobot_checkpoints_load(workdir, tmp_path):
    info, path = _train(workdir, "act", steps=1)
    policy = load_policy(path, device="cpu")
    _check_actions(policy.infer(_obs(h=48, w=64)), TINY_POLICY_OPTIONS["act"]["chunk_size"])
    # a lerobot-train style folder (no model.json): the type comes from config.json
    import shutil

    plain = tmp_path / "pretrained_model"
    shutil.copytree(path, plain)
    (plain / "model.json").unlink()
    assert policy_type_of(plain) == "act"
    _check_actions(load_policy(plain).infer(_obs(h=48, w=64)), TINY_POLICY_OPTIONS["act"]["chunk_size"])


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model.json"):
        load_policy(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "model.json").write_text(json.dumps({"policy_type": "gpt"}))
    with pytest.raises(ValueError, match="unknown policy type"):
        load_policy(tmp_path / "odd")


def test_unknown_policy_option_is_rejected(workdir):
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features

    meta = LeRobotDatasetMetadata("local/x", root=workdir["dataset"])
    features = dataset_to_policy_features(meta.features)
    with pytest.raises(ValueError, match="unknown CNNLSTMConfig option"):
        get_policy_type("cnn_lstm").make_config(features, "cpu", {"chunk_sz": 5})
    config = get_policy_type("act").make_config(features, "cpu", {"chunk_size": 20, "n_action_steps": 20})
    assert config.pretrained_backbone_weights is None and config.chunk_size == 20
    assert sorted(config.image_features) == [f"observation.images.{c}" for c in sorted(CAMS)]


# --- the scripted policy (policy/scripted.py): receding-horizon reach, hold ----------------------------------------
def _drive(policy, start, every: int, rows: int) -> np.ndarray:
    """The arm's path under a perfect tracker: each chunk executed open loop for ``every`` rows, then a new chunk
    planned from the last executed row (as hil_session does with replan_steps); ``rows`` + 1 poses from ``start``."""
    from h1_training.policy.scripted import ScriptedPolicy

    assert isinstance(policy, ScriptedPolicy)
    path = [np.asarray(start, np.float32)]
    while len(path) <= rows:
        path += list(policy.infer({"state": path[-1]})["actions"][:every])
    return np.stack(path[:rows + 1]).astype(np.float64)


@pytest.mark.parametrize("start", ["home", "random"])
def test_scripted_reach_is_the_same_motion_however_often_it_is_replanned(start):
    from h1_training.policy.scripted import REACH_TARGET_RAD, ScriptedConfig, ScriptedPolicy
    from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD

    policy = ScriptedPolicy(ScriptedConfig(mode="reach"))
    cfg = policy.config
    q0 = ARM_HOME_RAD if start == "home" else np.random.default_rng(7).uniform(ARM_LOWER_RAD, ARM_UPPER_RAD) * 0.6
    dist = float(np.abs(REACH_TARGET_RAD - q0).max())
    rows = int(4 * cfg.fps * (dist / cfg.max_speed + 1.0))
    arrivals = {}
    for every in (1, 5, 25, cfg.horizon):
        path = _drive(policy, q0, every, rows)
        gap = np.abs(path - REACH_TARGET_RAD).max(axis=1)
        assert gap[-1] < 0.02, (every, gap[-1])
        arrivals[every] = int(np.argmax(gap < 0.02)) / cfg.fps
        # never faster than max_speed on any joint between rows, never past the target, never away from it
        speed = np.abs(np.diff(path, axis=0)).max(axis=1) * cfg.fps
        assert speed.max() <= cfg.max_speed * 1.001, (every, speed.max())
        assert np.all(np.diff(gap) <= 1e-6), every
        # no stop dead at the target nor a lurch at a re-plan: after the first row the speed changes gradually
        assert np.abs(np.diff(speed)).max() < 0.15 * cfg.max_speed, (every, np.abs(np.diff(speed)).max())
        # all joints arrive together: every pose lies on the straight line from the start to the target
        moving = np.abs(REACH_TARGET_RAD - q0) > 0.05
        left = (REACH_TARGET_RAD - path)[:, moving] / (REACH_TARGET_RAD - q0)[moving]
        assert np.ptp(left, axis=1).max() < 1e-3, every
    # the same arrival however often it re-planned, at about max_speed on the farthest joint (not a move from rest
    # per chunk, which crawls when re-planned often)
    assert max(arrivals.values()) <= 1.2 * min(arrivals.values()), arrivals
    assert max(arrivals.values()) < dist / cfg.max_speed + 0.6, (arrivals, dist)


def test_scripted_chunks_stay_inside_the_joint_limits():
    from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
    from h1_training.robot_model import ARM_LOWER_RAD, ARM_UPPER_RAD

    beyond = (ARM_UPPER_RAD + 0.5).tolist()
    policy = ScriptedPolicy(ScriptedConfig(mode="reach", target=beyond))   # a target past the limits is clipped
    assert np.allclose(policy.target, ARM_UPPER_RAD)
    for state in (ARM_LOWER_RAD - 0.3, ARM_UPPER_RAD + 0.3, ARM_LOWER_RAD, (ARM_LOWER_RAD + ARM_UPPER_RAD) / 2):
        actions = policy.infer({"state": state.astype(np.float32)})["actions"]
        assert actions.shape == (policy.config.horizon, 14)
        assert np.all(actions >= ARM_LOWER_RAD.astype(np.float32))
        assert np.all(actions <= ARM_UPPER_RAD.astype(np.float32))
        steps = np.abs(np.diff(actions.astype(np.float64), axis=0)).max(axis=1) * policy.config.fps
        assert steps.max() <= policy.config.max_speed * 1.001
    at_target = policy.infer({"state": policy.target.astype(np.float32)})["actions"]
    assert np.allclose(at_target, policy.target, atol=1e-6)


def test_scripted_hold_repeats_its_target_whatever_the_state():
    from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
    from h1_training.robot_model import ARM_HOME_RAD

    policy = ScriptedPolicy(ScriptedConfig(mode="hold", horizon=20))
    for seed in (0, 1):
        actions = policy.infer(_obs(seed=seed))["actions"]
        assert actions.shape == (20, 14) and actions.dtype == np.float32
        assert np.all(actions == ARM_HOME_RAD.astype(np.float32))
    with pytest.raises(ValueError, match="mode"):
        ScriptedConfig(mode="wave")


def test_scripted_model_dirs_round_trip_and_old_ones_still_load(tmp_path):
    from h1_training.policy.scripted import REACH_TARGET_RAD, ScriptedConfig, ScriptedPolicy, is_scripted_dir
    from h1_training.robot_model import ARM_HOME_RAD

    policy = ScriptedPolicy(ScriptedConfig(mode="reach", horizon=30, max_speed=0.4))
    loaded = ScriptedPolicy.load(policy.save(tmp_path / "new"))
    assert is_scripted_dir(tmp_path / "new") and loaded.model_id == "new"
    obs = {"state": ARM_HOME_RAD.astype(np.float32)}
    np.testing.assert_array_equal(loaded.infer(obs)["actions"], policy.infer(obs)["actions"])
    # a config.json written by the minimum-jerk planner (it had min_duration_s)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({
        "policy_type": "scripted", "mode": "reach", "target": REACH_TARGET_RAD.tolist(), "horizon": 50, "fps": 50.0,
        "max_speed": 0.6, "min_duration_s": 1.0, "extra": {}}))
    old = ScriptedPolicy.load(tmp_path / "old")
    assert old.config.max_speed == 0.6 and old.metadata["action_horizon"] == 50
    assert old.infer(obs)["actions"].shape == (50, 14)


@pytest.mark.parametrize("max_speed,tau,horizon", [(0.6, 0.2, 50), (3.0, 0.05, 200)])
def test_scripted_plan_is_the_iterated_step(max_speed, tau, horizon):
    """The reach's rows computed at once are the rows of stepping one at a time, from anywhere (at the target,
    a hair off it, inside and at the joint limits)."""
    from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
    from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD

    policy = ScriptedPolicy(ScriptedConfig(max_speed=max_speed, approach_tau_s=tau, horizon=horizon))
    rng = np.random.default_rng(3)
    starts = [np.asarray(ARM_HOME_RAD, float), policy.target.copy(), policy.target + 1e-9,
              np.asarray(ARM_LOWER_RAD, float)] + [rng.uniform(ARM_LOWER_RAD, ARM_UPPER_RAD) for _ in range(10)]
    for q0 in starts:
        rows, q = [], q0
        for _ in range(horizon):
            q = policy.step(q)
            rows.append(q)
        assert np.abs(policy.plan(q0, horizon) - np.array(rows)).max() < 1e-9
        actions = policy.infer({"state": q0.astype(np.float32)})["actions"]
        assert actions.shape == (horizon, 14) and actions.dtype == np.float32
        assert np.all(actions >= np.asarray(ARM_LOWER_RAD) - 1e-6)
        assert np.all(actions <= np.asarray(ARM_UPPER_RAD) + 1e-6)
