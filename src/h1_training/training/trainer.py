"""The training loop: one loop for every policy type (LeRobot ACT / Diffusion, our CNN-LSTM), CPU or GPU(s).

    from h1_training.training.trainer import TrainConfig, run_training
    info = run_training(TrainConfig(policy_type="act", dataset_dir="data/lerobot/epoch3", output_root="models",
                                    steps=20000, batch_size=8, human_weight=3.0),
                        progress=lambda p: print(p.step, p.loss), should_stop=lambda: False)

It follows ``lerobot-train`` (lerobot 0.4.4 ``scripts/lerobot_train.py``): features and normalization stats from the
dataset, the policy's optimizer/scheduler presets, gradient clipping, ``accelerate`` for devices and multi-GPU —
plus what the HIL loop needs:

- **Human corrections up-weighted** (``human_weight``): frames are drawn by a ``WeightedRandomSampler`` whose weight
  is ``human_weight`` on frames of the dataset's ``intervention`` column and 1 elsewhere — intervention-weighted
  regression as in IWR (Mandlekar et al. 2020) and Sirius (Liu et al. 2022). ``human_weight=1`` is plain shuffling.
- **Fine-tuning** from ``parent_model`` (a registry id or a model folder): its architecture and weights, this
  dataset's normalization stats.
- **Progress** through a callback (step, epoch, loss, lr, ETA) and **cancellation** through ``should_stop``
  (checked before every step; raises ``TrainingStopped`` and registers nothing).
- **The result** is committed to the ``ModelRegistry`` at ``output_root`` with metadata (dataset, config, metrics,
  parent) and returned as ``ModelInfo``.

Several GPUs (LeRobot's own path, ``accelerate``; every process runs this same loop on its shard of each batch)::

    accelerate launch --multi_gpu --num_processes 4 -m h1_training.training.trainer \\
        --policy act --dataset data/lerobot/epoch3 --models models --steps 20000 --batch-size 8

(``--batch-size`` is per process; only the main process reports progress and writes the model.) Any torch
distributed launcher works the same way; on CPU (gloo), e.g. to try the multi-process path without GPUs::

    torchrun --nproc_per_node 2 -m h1_training.training.trainer --device cpu --policy cnn_lstm ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.policy.models import POLICY_TYPES, get_policy_type, policy_type_of
from h1_training.policy.models.base import INTERVENTION_KEY, configure_torch_threads, ensure_offline_hub
from h1_training.policy.train_request import DEFAULT_TRAINING_DEVICE, TRAINING_DEVICES
from h1_training.training.memory_data import MemoryDataset, image_bytes
from h1_training.training.registry import ModelInfo, ModelRegistry

log = logging.getLogger("h1_training.train")

@dataclass
class TrainConfig:
    policy_type: str = "act"
    dataset_dir: str | Path = ""            # a LeRobotDataset root (h1-training convert's output)
    output_root: str | Path = "models"      # the ModelRegistry root
    steps: int = 1000
    batch_size: int = 8
    lr: float | None = None                 # None: the policy's preset (ACT 1e-5, Diffusion 1e-4, CNN-LSTM 3e-4)
    seed: int = 0
    device: str = DEFAULT_TRAINING_DEVICE   # TRAINING_DEVICES (policy/train_request.py)
    human_weight: float = 1.0               # sampling weight of human-correction frames (policy frames: 1)
    parent_model: str | None = None         # registry id or model folder to fine-tune from
    extra: dict[str, Any] = field(default_factory=dict)  # policy config options (e.g. chunk_size, dim_model);
    #                                         "backbone_weights": a local torchvision ResNet state_dict (ACT)
    num_workers: int = 0                    # DataLoader workers (video decoding); 0 = in the training process
    grad_clip_norm: float | None = None     # None: the optimizer preset's (10)
    progress_every: int = 1                 # call progress() every N steps (and at the last one)
    pre_intervention_s: float = 0.0         # policy frames this long before a human takeover get weight 0 (they
    #                                         show the mistake the person stopped; Sirius drops them the same way)
    preload: bool = True                    # decode a small dataset into memory once (training/memory_data.py)
    preload_max_mb: float = 3000.0          # ... when its used cameras' frames fit in this much memory

    def __post_init__(self) -> None:
        if self.policy_type not in POLICY_TYPES:
            raise ValueError(f"unknown policy type {self.policy_type!r}; known: {sorted(POLICY_TYPES)}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (math.isfinite(self.human_weight) and self.human_weight >= 0):
            raise ValueError(f"human_weight must be >= 0, got {self.human_weight}")
        if self.device not in TRAINING_DEVICES:
            raise ValueError(f"device must be one of {TRAINING_DEVICES} (select GPUs with CUDA_VISIBLE_DEVICES), "
                             f"got {self.device!r}")
        if not (math.isfinite(self.pre_intervention_s) and self.pre_intervention_s >= 0):
            raise ValueError(f"pre_intervention_s must be >= 0, got {self.pre_intervention_s}")
        if int(self.num_workers) < 0 or int(self.progress_every) < 1:
            raise ValueError("num_workers must be >= 0 and progress_every >= 1")
        if not isinstance(self.extra, dict):
            raise ValueError(f"extra must be a dict of policy options, got {type(self.extra).__name__}")
        if not str(self.dataset_dir):
            raise ValueError("dataset_dir is required (a LeRobotDataset made by `h1-training convert`)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dataset_dir"] = str(self.dataset_dir)
        out["output_root"] = str(self.output_root)
        return out


@dataclass
class TrainProgress:
    step: int
    total_steps: int
    epoch: float            # passes over the dataset so far
    loss: float
    lr: float
    eta_s: float
    elapsed_s: float = 0.0
    steps_per_s: float = 0.0
    data_s: float = 0.0     # of elapsed_s, the time spent waiting for batches (loader + preprocessor), as
    #                         lerobot-train's data_s counts it


class TrainingStopped(Exception):
    """``should_stop()`` returned True; no model was registered."""


def _dataset_repo_id(dataset_dir: Path) -> str:
    return f"local/{dataset_dir.name or 'dataset'}"


def frame_weights(intervention: np.ndarray | None, n_frames: int, human_weight: float,
                  episode_bounds: list[tuple[int, int]], drop_last: int = 0,
                  pre_intervention: int = 0) -> np.ndarray:
    """Per-frame sampling weights: ``human_weight`` on intervention frames, 1 elsewhere, 0 on the last
    ``drop_last`` frames of each episode (LeRobot's EpisodeAwareSampler rule for Diffusion) and 0 on the
    ``pre_intervention`` policy frames before each takeover (the policy's mistake the person stopped)."""
    w = np.ones(n_frames, dtype=np.float64)
    if intervention is not None:
        human = np.asarray(intervention).reshape(-1)[:n_frames] > 0
        w[human] = human_weight
        if pre_intervention > 0:
            for start, end in episode_bounds:
                onsets = start + 1 + np.flatnonzero(~human[start:end - 1] & human[start + 1:end])
                for onset in onsets:
                    lo = max(start, onset - pre_intervention)
                    w[lo:onset][~human[lo:onset]] = 0.0
    if drop_last > 0:
        for start, end in episode_bounds:
            w[max(start, end - drop_last):end] = 0.0
    if not np.any(w > 0):
        raise ValueError("no frame can be sampled (every weight is 0: human_weight=0 on an all-human dataset?)")
    return w


def _make_sampler(weights: np.ndarray, seed: int) -> Any:
    import torch
    from torch.utils.data import SubsetRandomSampler, WeightedRandomSampler

    gen = torch.Generator().manual_seed(seed)
    positive = weights[weights > 0]
    if np.allclose(positive, positive[0]):  # uniform: shuffle without replacement, as lerobot-train does
        return SubsetRandomSampler(np.flatnonzero(weights > 0).tolist(), generator=gen)
    return WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(weights), replacement=True, generator=gen)


def _memory_batches(memory: MemoryDataset, sampler: Any, batch_size: int) -> Iterator[dict[str, Any]]:
    """Endless batches of ``memory`` in the sampler's order (one pass of the sampler after another)."""
    while True:
        buf: list[int] = []
        for i in sampler:
            buf.append(int(i))
            if len(buf) == batch_size:
                yield memory.batch(np.array(buf))
                buf = []
        if buf:
            yield memory.batch(np.array(buf))


def _resolve_parent(parent: str, registry: ModelRegistry) -> tuple[Path, str | None]:
    """(folder, registry id or None) of the model to fine-tune from."""
    path = Path(parent)
    if path.is_dir():
        return path, None
    try:
        registry.get(parent)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"parent model {parent!r}: not a folder and not in the registry ({exc})") from exc
    return registry.path(parent), parent


def _check_features(config: Any, features: dict[str, Any], parent: Path) -> None:
    want = {k: tuple(f.shape) for k, f in {**config.input_features, **config.output_features}.items()}
    have = {k: tuple(features[k].shape) for k in want if k in features}
    if want != have:
        raise ValueError(f"the dataset does not match parent model {parent}: the model uses {want}, "
                         f"the dataset has {have}")


def run_training(cfg: TrainConfig, progress: Callable[[TrainProgress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> ModelInfo:
    """Train ``cfg.policy_type`` on ``cfg.dataset_dir`` and register the result; see the module docstring."""
    ensure_offline_hub()
    configure_torch_threads()
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.utils.random_utils import set_seed

    from h1_training.recording.layout import read_provenance

    warnings.filterwarnings("ignore", message=".*video decoding and encoding capabilities of torchvision.*")
    dataset_dir = Path(cfg.dataset_dir)
    if not (dataset_dir / "meta" / "info.json").exists():
        raise FileNotFoundError(f"{dataset_dir} is not a LeRobotDataset (no meta/info.json); run h1-training convert")
    registry = ModelRegistry(Path(cfg.output_root))
    ptype = get_policy_type(cfg.policy_type)
    extra = dict(cfg.extra)
    backbone = extra.pop("backbone_weights", None)

    accelerator = Accelerator(cpu=cfg.device == "cpu", step_scheduler_with_optimizer=False,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    device = accelerator.device
    if cfg.device in ("cuda", "mps") and device.type != cfg.device:
        raise RuntimeError(f"device {cfg.device!r} asked for but accelerate found {device.type!r}")
    main = accelerator.is_main_process
    set_seed(cfg.seed, accelerator=accelerator)

    repo_id = _dataset_repo_id(dataset_dir)
    meta = LeRobotDatasetMetadata(repo_id, root=dataset_dir)
    features = dataset_to_policy_features(meta.features)

    parent_dir, parent_id = (None, None)
    if cfg.parent_model:
        parent_dir, parent_id = _resolve_parent(cfg.parent_model, registry)
        parent_type = policy_type_of(parent_dir)
        if parent_type != cfg.policy_type:
            raise ValueError(f"parent model {cfg.parent_model!r} is a {parent_type!r} policy, not {cfg.policy_type!r}")
        config = ptype.apply_overrides(ptype.load_config(parent_dir, device.type), extra)
        _check_features(config, features, parent_dir)
        policy = ptype.load_weights(parent_dir, config)
    else:
        config = ptype.make_config(features, device.type, extra)
        policy = ptype.policy_class()(config)
    if backbone:
        if ptype.load_backbone is None:
            raise ValueError(f"{cfg.policy_type} does not take backbone_weights")
        ptype.load_backbone(policy, Path(backbone))
    policy.to(device)
    preprocessor, postprocessor = ptype.make_processors(config, meta.stats)

    dataset = LeRobotDataset(repo_id, root=dataset_dir, delta_timestamps=resolve_delta_timestamps(config, meta),
                             video_backend="pyav")
    bounds = list(zip(meta.episodes["dataset_from_index"], meta.episodes["dataset_to_index"]))
    intervention = None
    if INTERVENTION_KEY in dataset.features:
        intervention = np.asarray(dataset.hf_dataset.with_format("numpy")[INTERVENTION_KEY]).reshape(-1)
    elif cfg.human_weight != 1.0:
        log.warning("%s has no %r column: human_weight=%g has no effect", dataset_dir, INTERVENTION_KEY,
                    cfg.human_weight)
    weights = frame_weights(intervention, dataset.num_frames, cfg.human_weight, bounds,
                            int(getattr(config, "drop_n_last_frames", 0) or 0),
                            int(round(cfg.pre_intervention_s * meta.fps)))
    human_frames = int((intervention > 0).sum()) if intervention is not None else 0
    human_share = float(weights[intervention > 0].sum() / weights.sum()) if intervention is not None else 0.0
    image_keys = list(getattr(config, "used_image_keys", None) or config.image_features)
    memory = None
    if (cfg.preload and accelerator.num_processes == 1
            and image_bytes(meta, image_keys) <= cfg.preload_max_mb * 1e6):
        memory = MemoryDataset(dataset, image_keys, dataset.delta_indices)
        loader = _memory_batches(memory, _make_sampler(weights, cfg.seed), cfg.batch_size)
    else:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, sampler=_make_sampler(weights, cfg.seed),
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda", drop_last=False,
            prefetch_factor=2 if cfg.num_workers else None,
        )

    opt_cfg = config.get_optimizer_preset()
    if cfg.lr is not None:
        opt_cfg.lr = cfg.lr
    clip = cfg.grad_clip_norm if cfg.grad_clip_norm is not None else opt_cfg.grad_clip_norm
    optimizer = opt_cfg.build(policy.get_optim_params())
    sched_cfg = config.get_scheduler_preset()
    if sched_cfg is not None and getattr(sched_cfg, "num_warmup_steps", None):
        # a warm-up longer than a short job would leave the learning rate near 0 for all of it
        sched_cfg.num_warmup_steps = min(sched_cfg.num_warmup_steps, max(1, cfg.steps // 10))
    scheduler = sched_cfg.build(optimizer, cfg.steps) if sched_cfg is not None else None
    if memory is not None:  # batches come from memory: only the model and optimizer go through accelerate
        prepared = accelerator.prepare(policy, optimizer, *([scheduler] if scheduler is not None else []))
        policy, optimizer = prepared[0], prepared[1]
        scheduler = prepared[2] if scheduler is not None else None
    elif scheduler is not None:
        policy, optimizer, loader, scheduler = accelerator.prepare(policy, optimizer, loader, scheduler)
    else:
        policy, optimizer, loader = accelerator.prepare(policy, optimizer, loader)

    if main:
        log.info("training %s on %s (%d episodes, %d frames, %d human) for %d steps on %s x%d, batch %d",
                 cfg.policy_type, dataset_dir, meta.total_episodes, dataset.num_frames, human_frames, cfg.steps,
                 device, accelerator.num_processes, cfg.batch_size)
    policy.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    history: list[list[float]] = []
    history_every = max(1, cfg.steps // 100)
    batches = iter(loader)
    callback_failed = False
    samples_per_step = cfg.batch_size * accelerator.num_processes
    data_s = 0.0
    for step in range(1, cfg.steps + 1):
        if should_stop is not None and should_stop():
            raise TrainingStopped(f"training stopped on request at step {step - 1}/{cfg.steps}")
        t_data = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = preprocessor(batch)
        data_s += time.perf_counter() - t_data
        with accelerator.autocast():
            loss, _ = policy(batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is {loss.item()} at step {step}: lower the learning rate or check the data")
        accelerator.backward(loss)
        if clip and clip > 0:
            accelerator.clip_grad_norm_(policy.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()
        if scheduler is not None:
            scheduler.step()
        loss_value = float(loss.item())
        losses.append(loss_value)
        if step % history_every == 0 or step == cfg.steps:
            history.append([step, round(loss_value, 6)])
        if main and progress is not None and (step % cfg.progress_every == 0 or step == cfg.steps):
            elapsed = time.perf_counter() - t0
            rate = step / elapsed if elapsed > 0 else 0.0
            report = TrainProgress(step=step, total_steps=cfg.steps,
                                   epoch=step * samples_per_step / max(1, dataset.num_frames), loss=loss_value,
                                   lr=float(optimizer.param_groups[0]["lr"]),
                                   eta_s=(cfg.steps - step) / rate if rate > 0 else float("inf"),
                                   elapsed_s=elapsed, steps_per_s=rate, data_s=data_s)
            try:
                progress(report)
            except Exception:  # a broken observer must not throw away the training run
                if not callback_failed:
                    log.exception("progress callback failed (training goes on)")
                callback_failed = True
    duration = time.perf_counter() - t0
    accelerator.wait_for_everyone()

    model_id = None
    if main:
        tail = losses[-max(1, len(losses) // 10):]
        metrics = {
            "steps": cfg.steps, "final_loss": float(np.mean(tail)), "first_loss": losses[0],
            "duration_s": round(duration, 3), "steps_per_s": round(cfg.steps / duration, 4) if duration else None,
            "samples_seen": cfg.steps * samples_per_step, "num_processes": accelerator.num_processes,
            "device": str(device), "human_sample_share": round(human_share, 4), "loss_history": history,
        }
        provenance = read_provenance(dataset_dir)
        dataset_info = {
            "path": str(dataset_dir.resolve()), "repo_id": repo_id, "episodes": meta.total_episodes,
            "frames": dataset.num_frames, "fps": meta.fps, "human_frames": human_frames,
            "sources": provenance.get("sources", []), "skipped_episodes": len(provenance.get("skipped", [])),
        }
        staged = registry.staging_dir()
        ptype.save(staged, accelerator.unwrap_model(policy), preprocessor, postprocessor)
        policy_config = json.loads((staged / "config.json").read_text())
        info = registry.commit(staged, cfg.policy_type, parent=parent_id or (str(parent_dir) if parent_dir else None),
                               dataset=dataset_info, config={"train": cfg.to_dict(), "policy": policy_config},
                               metrics=metrics)
        model_id = info.id
        log.info("trained %s in %.1f s (%.2f steps/s), final loss %.4f", info.id, duration,
                 cfg.steps / duration if duration else 0.0, metrics["final_loss"])
    if accelerator.num_processes > 1:
        model_id = broadcast_object_list([model_id])[0]
    accelerator.wait_for_everyone()
    return registry.get(model_id)


# --- command line (h1-training train) ------------------------------------------------------------------
def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``h1-training train`` (and of this module run with ``-m``)."""
    parser.add_argument("--policy", default="act", choices=sorted(POLICY_TYPES), help="policy type")
    parser.add_argument("--dataset", required=True, type=Path, help="LeRobotDataset folder (h1-training convert)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="model registry folder")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8, help="per process")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the policy's preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=DEFAULT_TRAINING_DEVICE, choices=TRAINING_DEVICES,
                        help="auto: cuda when present (select GPUs with CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--human-weight", type=float, default=1.0,
                        help="sampling weight of human-correction frames relative to policy frames")
    parser.add_argument("--parent", default=None, help="fine-tune from this model (registry id or folder)")
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                        help="policy config option (repeatable)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--diffusion-sampling", default=None, metavar="SAMPLER[:STEPS]",
                        help="Diffusion only: the sampler saved with the model, ddim:10 or ddpm[:STEPS] "
                             "(default: LeRobot's, DDPM with 100 steps); serve --diffusion-sampling overrides it")
    parser.add_argument("--deploy", action="store_true", help="deploy the new model when training succeeds")
    parser.add_argument("--json", action="store_true", help="print the ModelInfo as JSON")


def run_cli(args: argparse.Namespace) -> int:
    """``h1-training train`` and ``python -m h1_training.training.trainer``: train, register, report."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        extra = dict(args.option)
        if getattr(args, "diffusion_sampling", None):
            if args.policy != "diffusion":
                raise ValueError(f"--diffusion-sampling is for --policy diffusion, not {args.policy}")
            from h1_training.policy.models.diffusion import parse_sampling

            extra.update(parse_sampling(args.diffusion_sampling))
        cfg = TrainConfig(policy_type=args.policy, dataset_dir=args.dataset, output_root=args.models,
                          steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          device=args.device, human_weight=args.human_weight, parent_model=args.parent,
                          extra=extra, num_workers=args.num_workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    # under `accelerate launch` every process runs this; only rank 0 reports, deploys and prints
    main_process = int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(total=cfg.steps, unit="step", desc=f"train {cfg.policy_type}", dynamic_ncols=True,
               disable=not main_process)

    def show(p) -> None:
        bar.n = p.step
        bar.set_postfix(loss=f"{p.loss:.4f}", lr=f"{p.lr:.1e}", epoch=f"{p.epoch:.2f}")
        bar.refresh()

    try:
        info = run_training(cfg, progress=show)
    except KeyboardInterrupt:
        print("\ninterrupted: no model registered", file=sys.stderr)
        return 130
    except TrainingStopped as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    if not main_process:
        return 0
    if args.deploy:
        ModelRegistry(Path(args.models)).deploy(info.id)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, default=str))
    else:
        print(f"registered {info.id} (epoch {info.epoch}) in {args.models}: final loss "
              f"{info.metrics.get('final_loss'):.4f}, {info.metrics.get('steps_per_s')} steps/s"
              + (", deployed" if args.deploy else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m h1_training.training.trainer`` / ``accelerate launch -m h1_training.training.trainer``: the
    same options as ``h1-training train``."""
    parser = argparse.ArgumentParser(prog="h1_training.training.trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
