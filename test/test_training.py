"""The training loop and the model registry: progress and cancellation, metadata on disk, fine-tuning lineage,
intervention-weighted sampling, deploy pointer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from h1_training.training.registry import ModelInfo, ModelRegistry, check_model_id
from h1_training.training.synthetic import TINY_POLICY_OPTIONS, write_session

torch = pytest.importorskip("torch")
pytest.importorskip("lerobot")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)  # 2 shared cores


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from h1_training.training.convert import convert_sessions

    root = tmp_path_factory.mktemp("train")
    write_session(root / "save", 1, episodes=2, frames=30, width=64, height=48)
    summary = convert_sessions([root / "save"], root / "dataset", progress=False)
    assert summary.episodes == 2
    return root / "dataset"


def _cfg(dataset: Path, models: Path, policy_type: str = "cnn_lstm", **kw):
    from h1_training.training.trainer import TrainConfig

    return TrainConfig(policy_type=policy_type, dataset_dir=dataset, output_root=models, steps=kw.pop("steps", 2),
                       batch_size=4, device="cpu", extra=dict(TINY_POLICY_OPTIONS[policy_type]), **kw)


# -- registry (no torch needed) ---------------------------------------------------------------------------
def test_registry_commit_list_get_deploy(tmp_path):
    reg = ModelRegistry(tmp_path / "models")
    assert reg.list() == [] and reg.deployed() is None and reg.latest() is None
    infos = []
    for n in range(2):
        staged = reg.staging_dir()
        (staged / "weights.bin").write_bytes(b"w")
        infos.append(reg.commit(staged, "act", parent=infos[-1].id if infos else None, dataset={"frames": 10 + n},
                                config={"lr": 1e-4}, metrics={"final_loss": 0.5 - n / 10}))
    a, b = infos
    assert (a.epoch, b.epoch) == (1, 2) and a.id.startswith("v1-act-") and b.parent == a.id
    assert [m.id for m in reg.list()] == [a.id, b.id] and reg.latest().id == b.id
    assert reg.get(b.id) == b and (reg.path(b.id) / "weights.bin").exists()
    on_disk = json.loads((reg.path(a.id) / "model.json").read_text())
    assert set(on_disk) == set(ModelInfo.__dataclass_fields__) and on_disk["dataset"] == {"frames": 10}
    assert not any((tmp_path / "models" / ".staging").iterdir())  # nothing left half-written

    assert reg.deploy(a.id).id == a.id and reg.deployed().id == a.id
    reg.deploy(b.id)
    assert reg.deployed().id == b.id and (tmp_path / "models" / "DEPLOYED").read_text().strip() == b.id
    with pytest.raises(KeyError):
        reg.deploy("v9-act-nothing")
    assert reg.deployed().id == b.id  # a failed deploy changes nothing
    with pytest.raises(ValueError):
        reg.remove(b.id)  # deployed
    reg.remove(a.id)
    assert [m.id for m in reg.list()] == [b.id]
    (tmp_path / "models" / "DEPLOYED").write_text("v7-gone\n")
    assert reg.deployed() is None  # dangling pointer: logged, not served


def test_registry_rejects_unsafe_ids(tmp_path):
    reg = ModelRegistry(tmp_path)
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 200, "a b"):
        with pytest.raises(ValueError):
            reg.path(bad)
    assert check_model_id("v3-cnn_lstm-20250101T000000Z")
    bad_dir = tmp_path / "models" / "broken"
    bad_dir.mkdir(parents=True)
    (bad_dir / "model.json").write_text("{not json")
    assert reg.list() == []  # damaged entry skipped


# -- sampling ---------------------------------------------------------------------------------------------
def test_intervention_weighted_sampling():
    from h1_training.training.trainer import _make_sampler, frame_weights

    intervention = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    w = frame_weights(intervention, 10, 4.0, [(0, 5), (5, 10)])
    assert w.tolist() == [1, 1, 4, 4, 1, 1, 1, 4, 1, 1]
    w = frame_weights(intervention, 10, 4.0, [(0, 5), (5, 10)], drop_last=2)
    assert w[[3, 4, 8, 9]].tolist() == [0, 0, 0, 0] and w[2] == 4
    draws = np.array(list(_make_sampler(frame_weights(intervention, 10, 4.0, []), seed=0)) * 1)
    for seed in range(1, 200):
        draws = np.concatenate([draws, list(_make_sampler(frame_weights(intervention, 10, 4.0, []), seed=seed))])
    human_share = np.isin(draws, [2, 3, 7]).mean()
    assert abs(human_share - 12 / 19) < 0.03  # 3 frames x 4 vs 7 frames x 1
    uniform = list(_make_sampler(frame_weights(intervention, 10, 1.0, []), seed=0))
    assert sorted(uniform) == list(range(10))  # weight 1: plain shuffle, every frame once
    with pytest.raises(ValueError):
        frame_weights(np.ones(4), 4, 0.0, [])


def test_train_config_validation(tmp_path):
    from h1_training.training.trainer import TrainConfig

    for bad in ({"policy_type": "gpt"}, {"steps": 0}, {"lr": -1.0}, {"human_weight": -1}, {"device": "cuda:7"},
                {"dataset_dir": ""}):
        with pytest.raises(ValueError):
            TrainConfig(**{"dataset_dir": tmp_path, **bad})


# -- the loop ---------------------------------------------------------------------------------------------
def test_training_reports_progress_and_registers_metadata(dataset, tmp_path):
    from h1_training.training.trainer import run_training

    seen = []
    info = run_training(_cfg(dataset, tmp_path / "models", "act", steps=3, human_weight=3.0), progress=seen.append,
                        should_stop=lambda: False)
    assert [p.step for p in seen] == [1, 2, 3] and all(p.total_steps == 3 for p in seen)
    assert seen[-1].eta_s == 0 and seen[0].eta_s > 0 and all(np.isfinite(p.loss) and p.lr > 0 for p in seen)
    assert seen[-1].epoch == pytest.approx(3 * 4 / 60)
    reg = ModelRegistry(tmp_path / "models")
    assert reg.list() == [info] and info.policy_type == "act" and info.epoch == 1 and info.parent is None
    assert info.dataset["frames"] == 60 and info.dataset["fps"] == 50 and info.dataset["human_frames"] > 0
    assert len(info.dataset["sources"]) == 2
    assert info.config["train"]["human_weight"] == 3.0 and info.config["policy"]["type"] == "act"
    assert info.config["policy"]["pretrained_backbone_weights"] is None  # nothing downloaded
    assert info.metrics["steps"] == 3 and np.isfinite(info.metrics["final_loss"])
    assert info.metrics["human_sample_share"] > info.dataset["human_frames"] / 60  # up-weighted
    files = {p.name for p in reg.path(info.id).iterdir()}
    assert {"model.json", "config.json", "model.safetensors", "policy_preprocessor.json",
            "policy_postprocessor.json"} <= files


def test_should_stop_is_honoured(dataset, tmp_path):
    from h1_training.training.trainer import TrainingStopped, run_training

    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    steps = []
    with pytest.raises(TrainingStopped, match="step 2/50"):
        run_training(_cfg(dataset, tmp_path / "models", steps=50), progress=lambda p: steps.append(p.step),
                     should_stop=stop)
    assert steps == [1, 2]
    assert ModelRegistry(tmp_path / "models").list() == []  # a stopped job registers nothing


def test_fine_tune_from_parent_and_cli(dataset, tmp_path, capsys):
    from h1_training.cli import main
    from h1_training.training.trainer import run_training

    models = tmp_path / "models"
    parent = run_training(_cfg(dataset, models, steps=1))
    child = run_training(_cfg(dataset, models, steps=1, parent_model=parent.id))
    assert child.parent == parent.id and child.epoch == parent.epoch + 1
    assert child.config["policy"]["chunk_size"] == TINY_POLICY_OPTIONS["cnn_lstm"]["chunk_size"]
    with pytest.raises(ValueError, match="cnn_lstm"):
        run_training(_cfg(dataset, models, "act", steps=1, parent_model=parent.id))  # wrong type

    args = ["train", "--policy", "cnn_lstm", "--dataset", str(dataset), "--models", str(models), "--steps", "1",
            "--batch-size", "2", "--device", "cpu", "--deploy", "--json"]
    for key, value in TINY_POLICY_OPTIONS["cnn_lstm"].items():
        args += ["--option", f"{key}={json.dumps(value)}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{"):])
    assert info["epoch"] == 3 and ModelRegistry(models).deployed().id == info["id"]
    assert main(["train", "--dataset", str(tmp_path / "nothing"), "--models", str(models), "--device", "cpu"]) == 2


@pytest.mark.parametrize("policy_type", ["cnn_lstm", "act"])
def test_memory_batches_match_lerobot_items(dataset, policy_type):
    """The trainer's in-memory batches hold what LeRobotDataset's items hold (history, chunks, padding, images)."""
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features

    from h1_training.policy.models import get_policy_type
    from h1_training.training.memory_data import MemoryDataset

    meta = LeRobotDatasetMetadata("local/dataset", root=dataset)
    ptype = get_policy_type(policy_type)
    config = ptype.make_config(dataset_to_policy_features(meta.features), "cpu", TINY_POLICY_OPTIONS[policy_type])
    ds = LeRobotDataset("local/dataset", root=dataset, delta_timestamps=resolve_delta_timestamps(config, meta),
                        video_backend="pyav")
    keys = list(config.image_features)
    memory = MemoryDataset(ds, keys, ds.delta_indices)
    idx = np.array([0, 3, 29, 30, 59])
    batch = memory.batch(idx)
    for row, i in enumerate(idx):
        item = ds[int(i)]
        for key in ["observation.state", "action", "action_is_pad", *keys]:
            want, got = item[key], batch[key][row]
            assert tuple(want.shape) == tuple(got.shape), key
            tol = 1.0 / 255 + 1e-6 if key in keys else 1e-6
            assert torch.allclose(want.float(), got.float(), atol=tol), (key, int(i))


def test_convert_only_the_cameras_a_policy_uses(tmp_path):
    from h1_training.training.convert import convert_sessions

    write_session(tmp_path / "save", 1, episodes=1, frames=10, width=64, height=48)
    summary = convert_sessions([tmp_path / "save"], tmp_path / "ds", progress=False, cameras=("ego_cam",))
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    videos = sorted(k for k, f in info["features"].items() if f["dtype"] == "video")
    assert summary.episodes == 1 and videos == ["observation.images.cam_head"]
    with pytest.raises(ValueError, match="unknown camera"):
        convert_sessions([tmp_path / "save"], tmp_path / "ds2", progress=False, cameras=("nose_cam",))


def test_a_train_worker_stops_when_its_server_is_gone(tmp_path):
    """The server runs the worker in its own process group: when the server dies by SIGKILL nothing signals the
    worker, so the worker watches its parent and ends itself instead of training for nobody."""
    import subprocess
    import sys
    import textwrap

    from h1_training.procs import wait_until

    pid_file = tmp_path / "worker.pid"
    # the child takes its parent's pid first, then says it is up (its pid in a file), then watches (fast period)
    child = textwrap.dedent(f"""
        import os
        from h1_training.training.train_worker import _exit_with_parent
        parent = os.getppid()
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        _exit_with_parent(parent, 0.05)
    """)
    # a "server" that starts it in its own session (as the job runner does), waits until it is up, and ends: the
    # child is orphaned as by a SIGKILL of the server
    server = textwrap.dedent(f"""
        import pathlib, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {child!r}], start_new_session=True)
        deadline = time.monotonic() + 20
        while not pathlib.Path({str(pid_file)!r}).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    """)
    subprocess.run([sys.executable, "-c", server], check=True, timeout=30)
    pid = int(pid_file.read_text())

    def ended() -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        return "\nState:\tZ" in state  # a zombie has ended; only its reaper has not looked yet

    wait_until(ended, 10, "the orphaned worker to end by itself")
