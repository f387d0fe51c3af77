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
AB_SEED_OFFSET = 200_000      # and the A/B comparison's fresh episodes,
CHECKPOINT_SEED_OFFSET = 300_000  # and `bench ab --demo-run`'s replay of two checkpoints


@dataclass
class LearningConfig:
    seed: int = 0
    epochs: int = 5                 # HIL epochs after the demonstrations (epoch 0)
    demos: int = 4
    episodes: int = 30              # HIL episodes per epoch (cheap: ~0.15 s each in the simulator; 10 reached 50-80 %)
    eval_episodes: int = 20
    ab_trials: int = 40             # planned A/B trials per model (the sequential test may stop earlier)
    train_steps: int = 1000
    lr: float = 1e-3                # each job: cosine from lr to lr/10 (a warm start keeps the learned keypoints)
    batch_size: int = 64
    human_weight: float = 3.0
    pre_intervention_s: float = 1.5  # the policy settles in ~0.3 s and a stall is judged over 1 s: 1.5 s covers it
    image_wh: tuple[int, int] = (96, 72)
    exec_index: int = 0             # chunk row executed (0: the next step; replanned every frame)
    # a human frame's action target = where the person had the arm this much later, clamped to the episode's last
    # frame: 2 s reaches past the end of a correction, so every frame of it says "go where the person put the hand"
    # (0.2 s taught "move a little from where you are" and the policy stalled 5-10 cm short)
    action_lookahead_s: float = 2.0
    task: TaskConfig = field(default_factory=TaskConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "demos", "episodes", "eval_episodes", "ab_trials", "train_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.human_weight < 0 or self.pre_intervention_s < 0 or self.exec_index < 0:
            raise ValueError("human_weight, pre_intervention_s and exec_index must be >= 0")
        w, h = self.image_wh
        if not (32 <= int(w) <= 640 and 24 <= int(h) <= 480):
            raise ValueError(f"image_wh must be within 32x24 .. 640x480, got {w}x{h}")
        if not (math.isfinite(self.action_lookahead_s) and 0 < self.action_lookahead_s <= 2):
            raise ValueError(f"action_lookahead_s must be in (0, 2] s, got {self.action_lookahead_s}")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ValueError(f"lr must be in (0, 1], got {self.lr}")


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


def evaluate_checkpoints(run_dir: Path, episodes: int) -> dict[str, Any]:
    """The first and the last model of a finished demo run, each alone on ``episodes`` fresh seeded episodes
    (per-trial success and partial credit); written to ``run_dir/ab_checkpoint_outcomes.json`` and returned."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    rows = [r for r in summary["epochs"] if r.get("model_id")]
    if len(rows) < 2:
        raise ValueError(f"{run_dir}: the run has {len(rows)} evaluated model(s); two are needed")
    cfg = LearningConfig(seed=int(summary["config"]["seed"]), exec_index=int(summary["config"]["exec_index"]),
                         image_wh=tuple(summary["config"]["image_wh"]))
    rollout = SimRollout(cfg.task, cfg.image_wh, cameras=("ego_cam",))
    out: dict[str, Any] = {"provenance": f"h1-training demo run {run_dir} (seed {cfg.seed}); epochs "
                                         f"{rows[0]['epoch']} and {rows[-1]['epoch']}; {episodes} episodes from "
                                         f"seed offset {CHECKPOINT_SEED_OFFSET}"}
    for key, row in (("first", rows[0]), ("last", rows[-1])):
        results = evaluate(rollout, cfg, local_policy(Path(summary["models_dir"]), row["model_id"]), episodes,
                           offset=CHECKPOINT_SEED_OFFSET)
        out[key] = {"model_id": row["model_id"], "epoch": row["epoch"], "trials": [r.outcome() for r in results]}
    write_json(Path(run_dir) / "ab_checkpoint_outcomes.json", out)
    return out


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def wilson_text(row: EpochRow) -> str:
    return f"{row.successes}/{row.trials} = {row.success_rate:.0%} [{row.ci_low:.0%}, {row.ci_high:.0%}]"


def fmt_opt(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


# --- the whole demo --------------------------------------------------------------------------------------------
SERVER = "gpu_server"
EPOCH_WAIT_S = 1800.0  # one epoch's conversion + training on a slow machine


@dataclass
class DemoRun:
    """Folders of one run and what it produced so far (written to ``summary.json`` after every epoch)."""

    run_dir: Path
    cfg: LearningConfig
    rows: list[EpochRow] = field(default_factory=list)
    ab: dict[str, Any] | None = None
    plot: str | None = None
    seconds: float = 0.0
    interrupted: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def robot_dir(self) -> Path:
        return self.run_dir / "robot"

    @property
    def gpu_dir(self) -> Path:
        return self.run_dir / "gpu_server" / "data"

    @property
    def models_dir(self) -> Path:
        return self.run_dir / "gpu_server" / "models"

    @property
    def work_dir(self) -> Path:
        return self.run_dir / "gpu_server" / "work"

    def summary(self) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        return {
            "epochs": [r.summary() for r in self.rows],
            "ab": self.ab,
            "data_dir": str(self.robot_dir),
            "gpu_data_dir": str(self.gpu_dir),
            "models_dir": str(self.models_dir),
            "plot": self.plot,
            "seconds": round(self.seconds, 1),
            "interrupted": self.interrupted,
            "problems": self.problems,
            "config": cfg,
            "paths": {"hil_collection": "pure-Python simulator (sim/rollout.py), policy served over the "
                                        "WebSocket by h1-training serve",
                      "evaluation": "pure-Python simulator, the served model's registry folder loaded in-process, "
                                    "episodes in lockstep",
                      "training": "h1-training serve --auto-train: epoch watcher -> train worker -> convert -> "
                                  "trainer -> registry -> hot swap",
                      "ab": "model_comparison node, trials run by sim_ab_trials in the pure-Python simulator"},
        }

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rows:
            path = save_curve(self.rows, self.robot_dir / "learning_curve.png",
                              f"reach from pixels, seed {self.cfg.seed}: success of the policy alone, "
                              f"{self.cfg.eval_episodes} seeded episodes per epoch")
            self.plot = str(path) if path else None
        write_json(self.run_dir / "summary.json", self.summary())


def _server_argv(cfg: LearningConfig, run: DemoRun) -> list[str]:
    from h1_training.procs import resolve_executable

    return resolve_executable("h1-training") + [
        "serve", "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
        "--models-dir", str(run.models_dir), "--data-dir", str(run.gpu_dir), "--work-dir", str(run.work_dir),
        "--auto-train", "--auto-policy", "keypoint", "--auto-steps", str(cfg.train_steps),
        "--auto-batch-size", str(cfg.batch_size), "--auto-lr", str(cfg.lr),
        "--auto-human-weight", str(cfg.human_weight),
        "--auto-pre-intervention-s", str(cfg.pre_intervention_s), "--auto-require-marker",
        "--auto-action-lookahead", str(max(1, round(cfg.action_lookahead_s * cfg.task.fps))),
        "--log-level", "WARNING"]


def _wait_for_model(port: int, after_epoch: int, say: Callable[[str], None], stop: Callable[[], bool],
                    server_alive: Callable[[], bool], timeout_s: float = EPOCH_WAIT_S) -> dict[str, Any]:
    """Poll ``/training_status`` until the server serves a model newer than ``after_epoch``; say the job's progress."""
    from h1_training.policy.client import PolicyClientError, get_training_status

    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        if stop():
            raise KeyboardInterrupt
        if not server_alive():
            raise RuntimeError("the policy server exited while training")
        try:
            st = get_training_status("127.0.0.1", port, timeout=5.0)
        except PolicyClientError:
            time.sleep(1.0)
            continue
        if int(st["epoch"]) > after_epoch and st["ready"]:
            return st
        last = st.get("last_job") or {}
        if last.get("status") == "failed" and not st.get("training") and not st.get("queued_jobs") \
                and int(st["epoch"]) <= after_epoch and (st.get("auto_train") or {}).get("current_job") is None:
            raise RuntimeError(f"training failed on the server: {str(last.get('error'))[-600:]}")
        job = st.get("job") or {}
        if job:
            line = (f"server: {job.get('stage') or 'queued'} {job.get('step', 0)}/{job.get('total_steps', 0)}"
                    + (f", loss {job['loss']:.3f}" if job.get("loss") is not None else ""))
            step = int(job.get("step") or 0)
            bucket = f"{job.get('stage')}:{step * 5 // max(1, int(job.get('total_steps') or 1))}"
            if bucket != shown:
                shown = bucket
                say(line)
        time.sleep(1.0)
    raise RuntimeError(f"no new model from the server in {timeout_s:.0f} s")


def _episode_line(epoch: int, i: int, n: int, r: EpisodeResult) -> str:
    if r.takeover_reason == "demonstration":
        how = "demonstration"
    elif r.intervened:
        how = f"stopped at {r.takeover_s:.1f} s ({r.takeover_reason}), corrected"
    else:
        how = "policy alone"
    end = f"success at {r.time_to_success_s:.1f} s" if r.success else f"missed by {r.final_distance_m * 100:.0f} cm"
    return (f"epoch {epoch} episode {i + 1}/{n}: {how}, {end}; {r.frames} frames ({r.human_frames} human), "
            f"object at ({r.object_xyz[0]:.2f}, {r.object_xyz[1]:.2f}) m")


def print_row(row: EpochRow, say: Callable[[str], None]) -> None:
    hil = "" if row.hil_success_rate is None else f", HIL episodes without help {row.hil_success_rate:.0%}"
    say(f"EPOCH {row.epoch}: {row.episodes} episodes, intervention {row.intervention_rate:.0%}, "
        f"{row.human_frames} human frames{hil}")
    say(f"EPOCH {row.epoch}: model {row.model_id}: success {wilson_text(row)} (95 % Wilson), mean time to success "
        f"{fmt_opt(row.mean_time_to_success_s, '.2f')} s, train loss {fmt_opt(row.train_loss, '.4f')}, "
        f"train {fmt_opt(row.train_s, '.0f')} s ({row.train_steps} steps)")


def run_learning_demo(cfg: LearningConfig, run_dir: Path, say: Callable[[str], None],
                      stop: Callable[[], bool] = lambda: False, echo: Any = None, domain: int | None = None,
                      ab: bool = True, on_server: Callable[[Any, int, DemoRun], None] | None = None) -> DemoRun:
    """The whole loop (module docstring); returns what was done. KeyboardInterrupt (or ``stop()``) ends it
    cleanly: the server and nodes are stopped and everything recorded so far is in ``run_dir``. ``on_server(group,
    port, run)`` runs once the server listens: it may start more processes in ``group`` (stopped with the rest),
    e.g. the operator's view of ``h1-training demo``."""
    from h1_training.procs import ProcessGroup, loopback_ros_env
    from h1_training.session.sync import SyncConfig, sync_epoch

    t0 = time.monotonic()
    run = DemoRun(Path(run_dir).resolve(), cfg)
    for d in (run.robot_dir, run.gpu_dir, run.models_dir, run.work_dir):
        d.mkdir(parents=True, exist_ok=True)
    env = loopback_ros_env(domain)
    env.setdefault("H1_TORCH_THREADS", "2")
    group = ProcessGroup(env=env, echo=echo)
    collect_rollout = SimRollout(cfg.task, cfg.image_wh)
    eval_rollout = SimRollout(cfg.task, cfg.image_wh, cameras=("ego_cam",))
    sync_cfg = SyncConfig(target=str(run.gpu_dir) + "/")
    try:
        group.start(SERVER, _server_argv(cfg, run))
        line = group.wait_for_line(SERVER, lambda s: "listening on ws://" in s, timeout=120)
        port = int(line.rsplit(":", 1)[1].split()[0].rstrip("/"))
        say(f"GPU server (h1-training serve --auto-train, keypoint policy) on 127.0.0.1:{port}")
        if on_server is not None:
            on_server(group, port, run)
        served_epoch = 0
        next_index = 0
        for epoch in range(cfg.epochs + 1):
            if stop():
                raise KeyboardInterrupt
            row = EpochRow(epoch=epoch)
            t1 = time.monotonic()
            demos = epoch == 0
            count = cfg.demos if demos else cfg.episodes
            say(f"epoch {epoch}: " + (f"{count} demonstrations by the simulated person" if demos else
                                      f"{count} HIL episodes with the served model {run.rows[-1].model_id}"))
            client = None
            policy = None
            if not demos:
                policy, client = served_policy("127.0.0.1", port)
            try:
                collected = collect_epoch(
                    collect_rollout, cfg, epoch, run.robot_dir, next_index, policy,
                    client.metadata.get("model_id", "") if client else "", count,
                    on_episode=lambda i, r, _p, e=epoch, n=count: say(_episode_line(e, i, n, r)), should_stop=stop)
            finally:
                if client is not None:
                    client.close()
            next_index += count
            row.collect_s = time.monotonic() - t1
            if stop() or len(collected) < count:
                raise KeyboardInterrupt
            res = sync_epoch(run.robot_dir, epoch, sync_cfg)
            if not res.ok:
                raise RuntimeError(f"sync of epoch {epoch} failed: {res.error}")
            say(f"epoch {epoch}: synced {len(res.episodes)} episodes to the GPU server's data folder "
                f"({res.bytes / 1e6:.1f} MB, SYNC_COMPLETE); waiting for its epoch watcher to train")
            st = _wait_for_model(port, served_epoch, say, stop, lambda: group.get(SERVER).running)
            served_epoch = int(st["epoch"])
            row.model_id = str(st["model_id"])
            figures = model_training_figures(run.models_dir, row.model_id)
            row.train_loss, row.train_s, row.train_steps = (figures.get("train_loss"), figures.get("train_s"),
                                                            figures.get("train_steps"))
            say(f"epoch {epoch}: server hot-swapped to {row.model_id} (epoch {served_epoch}); evaluating it "
                f"alone on {cfg.eval_episodes} seeded episodes")
            t2 = time.monotonic()
            evaluated = evaluate(eval_rollout, cfg, local_policy(run.models_dir, row.model_id), cfg.eval_episodes)
            row.eval_s = time.monotonic() - t2
            fill_row(row, collected, evaluated)
            # per-trial outcomes (success and partial credit) of each model: what `bench ab --demo-run` replays
            write_json(run.run_dir / "evaluation" / f"epoch_{epoch}.json",
                       {"model_id": row.model_id, "episode_offset": EVAL_SEED_OFFSET,
                        "trials": [r.outcome() for r in evaluated]})
            run.rows.append(row)
            print_row(row, say)
            run.seconds = time.monotonic() - t0
            run.save()
        if ab and len(run.rows) >= 2:
            run.ab = ab_compare(run, group, port, say, stop)
    except KeyboardInterrupt:
        run.interrupted = True
        say("interrupted: stopping; everything recorded so far is kept")
    except (RuntimeError, TimeoutError, OSError) as exc:
        run.problems.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        say(f"FAILED: {run.problems[-1]}")
    finally:
        group.stop()
        run.seconds = time.monotonic() - t0
        run.save()
    return run


def ab_compare(run: DemoRun, group: Any, port: int, say: Callable[[str], None],
               stop: Callable[[], bool]) -> dict[str, Any]:
    """Blinded A/B of the first and the last model through the ``model_comparison`` node, trials run by
    ``sim_ab_trials`` on fresh seeded episodes."""
    from h1_training.procs import resolve_executable

    cfg = run.cfg
    first, last = run.rows[0].model_id, run.rows[-1].model_id
    result_file = run.run_dir / "ab_result.json"
    say(f"A/B: {first} (epoch 0) vs {last} (epoch {run.rows[-1].epoch}) through model_comparison, up to "
        f"{cfg.ab_trials} fresh seeded episodes per model")
    try:
        group.get("model_comparison")  # already up (the operator's view): its panels show this A/B live
    except KeyError:
        group.start("model_comparison", resolve_executable("model_comparison") + [
            "--ros-args", "-p", f"policy_port:={port}", "-p", f"seed:={cfg.seed}"])
    trials = group.start("sim_ab_trials", resolve_executable("sim_ab_trials") + [
        "--ros-args", "-p", f"model_a:={first}", "-p", f"model_b:={last}", "-p", f"models_dir:={run.models_dir}",
        "-p", f"trials_per_model:={cfg.ab_trials}", "-p", f"seed:={cfg.seed}",
        "-p", f"episode_offset:={AB_SEED_OFFSET}", "-p", f"image_width:={cfg.image_wh[0]}",
        "-p", f"image_height:={cfg.image_wh[1]}", "-p", f"exec_index:={cfg.exec_index}",
        "-p", f"result_file:={result_file}"])
    shown = 0
    while trials.running:
        if stop():
            raise KeyboardInterrupt
        done = sum(1 for line in trials.lines if "[A/B] trial" in line)
        if done >= shown + 10:
            shown = done
            say(f"A/B: {done} trials run")
        time.sleep(0.5)
    if trials.proc.returncode != 0 or not result_file.is_file():
        tail = "; ".join(trials.lines[-3:])
        raise RuntimeError(f"the A/B trials failed (exit {trials.proc.returncode}): {tail}")
    verdict = json.loads(result_file.read_text())
    names = {first: "first", last: "last"}
    winner = names.get(verdict.get("winner", ""), verdict.get("winner") or "none")
    ab = {"p_value": verdict["p_value"], "winner": winner, "winner_model": verdict.get("winner", ""),
          "trials": verdict["trials"], "test": verdict["test"], "significant": verdict["significant"],
          "alpha": verdict["alpha"], "models": verdict["models"], "message": verdict["message"],
          "first_model": first, "last_model": last}
    per = ", ".join(f"{names.get(m['model_id'], m['model_id'])} {m['successes']}/{m['trials']}"
                    for m in verdict["models"])
    say(f"A/B: {per}; {verdict['test']} p = {verdict['p_value']:.2g}: "
        + (f"the {winner} model is better at alpha {verdict['alpha']:g}" if verdict["significant"]
           else "no significant difference"))
    return ab
