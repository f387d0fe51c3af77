"""The learning loop of ``h1-training demo``: a pixel policy that improves because of a person's corrections.

Per epoch (the robot side, in simulation, faster than real time: ``sim/rollout.py``)::

    collect   epoch 0: a few demonstrations (the simulated person guides every episode from the start);
              epoch e > 0: HIL episodes with the model the server serves -- the person stops it when it goes wrong
              and guides the arm to the object in damping -- written as seed-format HDF5 by the project's
              EpisodeWriter into save_dir/training_session_epoch{e}/, labelled by the simulator's success check
    sync      rsync of the epoch folder to the GPU server's data folder, then SYNC_COMPLETE (session/sync.py)
    train     nothing here: the server's epoch watcher (``h1-training serve --auto-train``) sees the complete
              epoch, converts every epoch so far to a LeRobotDataset, trains the keypoint policy (warm start from
              the served one; human frames weighted, the frames just before a takeover weighted 0) and
              hot-swaps it; this loop waits for ``/training_status`` to report the next epoch
    evaluate  the served model alone (through the server's WebSocket) on the same seeded episodes every epoch

At the end, a blinded A/B comparison of the first and the last model on fresh seeded episodes runs through the
``model_comparison`` node (see ``ab_compare``). Nothing in the policy's input says where the object is except the
head camera's pixels: the state is the 14 arm joint positions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.evaluation.stats import wilson_interval
from h1_training.recording import layout as L
from h1_training.recording.sampler import Sample
from h1_training.recording.writer import EpisodeMeta, EpisodeWriter
from h1_training.robot_model import CAMERA_NAMES, NUM_ARM_JOINTS, NUM_HAND_JOINTS
from h1_training.sim.reach_task import ImperfectOperator, OperatorConfig, TaskConfig, episode_rng, sample_object
from h1_training.sim.rollout import EpisodeResult, Frame, SimRollout, run_batch

PROMPT = "reach the object"
DEMO_SEED_OFFSET = 0          # episode indices of the run's seed: demos and HIL episodes 0..,
EVAL_SEED_OFFSET = 100_000    # the per-epoch evaluation set (fixed: paired across epochs),
AB_SEED_OFFSET = 200_000      # and the A/B comparison's fresh episodes


@dataclass
class LearningConfig:
    seed: int = 0
    epochs: int = 4                 # HIL epochs after the demonstrations (epoch 0)
    demos: int = 4
    episodes: int = 10              # HIL episodes per epoch
    eval_episodes: int = 20
    ab_trials: int = 40             # planned A/B trials per model (the sequential test may stop earlier)
    train_steps: int = 1000
    batch_size: int = 64
    human_weight: float = 3.0
    pre_intervention_s: float = 0.5
    image_wh: tuple[int, int] = (96, 72)
    exec_index: int = 0             # chunk row executed (0: the next step; replanned every frame)
    task: TaskConfig = field(default_factory=TaskConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "demos", "episodes", "eval_episodes", "ab_trials", "train_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.human_weight < 0 or self.pre_intervention_s < 0 or self.exec_index < 0:
            raise ValueError("human_weight, pre_intervention_s and exec_index must be >= 0")


@dataclass
class EpochRow:
    epoch: int
    model_id: str = ""                  # the model trained on epochs 0..epoch (evaluated in this row)
    episodes: int = 0
    human_frames: int = 0
    frames: int = 0
    intervention_rate: float = 0.0      # share of the epoch's recorded time under human control
    hil_success_rate: float | None = None  # HIL episodes the policy finished alone (None for demonstrations)
    success_rate: float = 0.0           # evaluation: the model alone on the fixed seeded episodes
    successes: int = 0
    trials: int = 0
    ci_low: float = 0.0
    ci_high: float = 1.0
    mean_time_to_success_s: float | None = None
    mean_final_distance_m: float | None = None
    train_loss: float | None = None
    train_s: float | None = None
    train_steps: int | None = None
    collect_s: float = 0.0
    eval_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# --- recording -------------------------------------------------------------------------------------------------
class FrameRecorder:
    """Writes a rollout's frames as one seed-format episode (the recorder's own writer; simulated clock)."""

    def __init__(self, path: Path, epoch: int, index: int, fps: float, model_version: str) -> None:
        self.writer = EpisodeWriter(path, EpisodeMeta(epoch=epoch, episode_index=index, prompt=PROMPT, fps=fps,
                                                      start_wall_ns=time.time_ns()), fsync=False)
        self.model_version = model_version
        self.t0_ns = time.time_ns()
        self.tick = 0
        self.hand = np.ones(NUM_HAND_JOINTS, dtype=np.float32)
        self.nan = np.full(NUM_ARM_JOINTS, np.nan, dtype=np.float32)

    def __call__(self, frame: Frame) -> None:
        ns = self.t0_ns + int(round(frame.t * 1e9))
        policy = frame.phase == L.PHASE_POLICY
        stamps = tuple(ns if jpeg else 0 for jpeg in frame.jpegs)
        self.writer.append(Sample(
            tick=self.tick, mono_ns=ns, wall_ns=ns, qpos=frame.qpos, qpos_ns=ns, hand=self.hand, hand_ns=ns,
            images=frame.jpegs, image_ns=stamps, placeholder=(False,) * len(CAMERA_NAMES),
            stale=(False,) * len(L.STALE_SOURCES), action=frame.action, action_ns=ns if policy else 0,
            model_version=self.model_version if policy else "", phase=frame.phase,
            proposal=frame.action if policy else self.nan, proposal_ns=ns if policy else 0, proposal_valid=policy))
        self.tick += 1

    def finish(self, result: EpisodeResult) -> str:
        summary = self.writer.finish(success_label=int(result.success), extra_attrs=result.attrs())
        return summary.path


# --- policies over the wire --------------------------------------------------------------------------------------
def served_policy(host: str, port: int, model: str | None = None) -> tuple[Callable[[dict], np.ndarray], Any]:
    """The server's policy as a rollout callable (openpi WebSocket protocol); returns (callable, client)."""
    from h1_training.policy.client import PolicyClient

    client = PolicyClient(host, port, model=model, request_timeout=30.0)
    client.connect()

    def act(obs: dict) -> np.ndarray:
        return np.asarray(client.infer(obs)["actions"])

    return act, client


# --- the steps -----------------------------------------------------------------------------------------------------
def collect_epoch(rollout: SimRollout, cfg: LearningConfig, epoch: int, save_dir: Path, first_index: int,
                  policy: Callable[[dict], np.ndarray] | None, model_version: str, count: int,
                  on_episode: Callable[[int, EpisodeResult, str], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[EpisodeResult]:
    """``count`` episodes (a demonstration each when ``policy`` is None) into save_dir/training_session_epoch{e}."""
    results = []
    for i in range(count):
        if should_stop is not None and should_stop():
            break
        rng = episode_rng(cfg.seed, DEMO_SEED_OFFSET + first_index + i)
        obj = sample_object(rng)
        person = ImperfectOperator(cfg.operator, cfg.task, obj, rng)
        recorder = FrameRecorder(L.episode_path(save_dir, epoch, i), epoch, i, cfg.task.fps, model_version)
        try:
            result = rollout.run(obj, policy, person, on_frame=recorder, exec_index=cfg.exec_index, prompt=PROMPT)
        except BaseException:
            recorder.writer.discard()
            raise
        path = recorder.finish(result)
        results.append(result)
        if on_episode is not None:
            on_episode(i, result, path)
    return results


def evaluate(rollout: SimRollout, cfg: LearningConfig, policy_batch: Callable[[list[dict]], Any], count: int,
             offset: int = EVAL_SEED_OFFSET) -> list[EpisodeResult]:
    """The policy alone (no person) on ``count`` seeded episodes -- the same objects for every model -- run in
    lockstep with one batched policy call per frame."""
    episodes = [rollout.episode(sample_object(episode_rng(cfg.seed, offset + i)), None, exec_index=cfg.exec_index,
                                prompt=PROMPT) for i in range(count)]
    return run_batch(episodes, policy_batch)


def local_policy(models_dir: Path, model_id: str) -> Callable[[list[dict]], Any]:
    """The registered model ``model_id`` loaded in this process (the folder the server loads it from) as a
    batched policy, for fast simulated evaluation."""
    from h1_training.policy.models import load_policy
    from h1_training.training.registry import ModelRegistry

    policy = load_policy(ModelRegistry(models_dir).path(model_id), device="cpu")
    return policy.infer_batch


def fill_row(row: EpochRow, collected: list[EpisodeResult], evaluated: list[EpisodeResult]) -> EpochRow:
    row.episodes = len(collected)
    row.frames = sum(r.frames for r in collected)
    row.human_frames = sum(r.human_frames for r in collected)
    row.intervention_rate = row.human_frames / row.frames if row.frames else 0.0
    hil = [r for r in collected if r.takeover_reason != "demonstration"]
    row.hil_success_rate = (sum(r.policy_success for r in hil) / len(hil)) if hil else None
    row.trials = len(evaluated)
    row.successes = sum(r.policy_success for r in evaluated)
    row.success_rate = row.successes / row.trials if row.trials else 0.0
    ci = wilson_interval(row.successes, row.trials)
    row.ci_low, row.ci_high = ci.low, ci.high
    times = [r.time_to_success_s for r in evaluated if r.policy_success and r.time_to_success_s is not None]
    row.mean_time_to_success_s = float(np.mean(times)) if times else None
    row.mean_final_distance_m = float(np.mean([r.final_distance_m for r in evaluated])) if evaluated else None
    return row


def model_training_figures(models_dir: Path, model_id: str) -> dict[str, Any]:
    """Loss, time and steps of a registered model's training (its model.json)."""
    from h1_training.training.registry import ModelRegistry

    try:
        info = ModelRegistry(models_dir).get(model_id)
    except (KeyError, ValueError):
        return {}
    m = info.metrics
    return {"train_loss": m.get("final_loss"), "train_s": m.get("duration_s"), "train_steps": m.get("steps"),
            "frames": info.dataset.get("frames"), "human_frames": info.dataset.get("human_frames")}


def save_curve(rows: list[EpochRow], path: Path, title: str) -> Path | None:
    """The learning curve: success with its 95 % Wilson interval, and the intervention rate, per epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [r.epoch for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    rate = np.array([r.success_rate for r in rows])
    low, high = np.array([r.ci_low for r in rows]), np.array([r.ci_high for r in rows])
    ax.errorbar(epochs, rate, yerr=[rate - low, high - rate], fmt="o-", capsize=4, color="tab:blue",
                label="success, policy alone (95 % Wilson)")
    hil = [(r.epoch, r.intervention_rate) for r in rows if r.epoch > 0]
    if hil:
        ax.plot(*zip(*hil), "s--", color="tab:orange", label="intervention rate (share of HIL time)")
    ax.axhline(0.8, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("epoch (0 = demonstrations; model trained on epochs 0..e)")
    ax.set_ylabel("rate")
    ax.set_xticks(epochs)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def wilson_text(row: EpochRow) -> str:
    return f"{row.successes}/{row.trials} = {row.success_rate:.0%} [{row.ci_low:.0%}, {row.ci_high:.0%}]"


def fmt_opt(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
