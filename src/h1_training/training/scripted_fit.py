"""Fitting the scripted policy, without torch: the reach target becomes where the episodes ended.

The last arm pose of an episode is where the operator (or the policy) left the arms when the task was done, so
the per-joint median over episodes is a robust target for the next scripted reach. This gives the sim demo and
the server tests a complete train -> register -> hot-swap cycle in well under a second; the learned policies go
through ``h1_training.training.trainer`` instead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.policy.scripted import ScriptedConfig, ScriptedPolicy
from h1_training.recording.layout import EPISODE_GLOB, is_excluded
from h1_training.recording.reader import load_episode

log = logging.getLogger("h1_training.training")


def episode_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out += sorted(p.rglob(EPISODE_GLOB)) if p.is_dir() else [p]
    return [f for f in out if not is_excluded(f)]  # "exclude from training" (recording/layout.py)


def fit_scripted(paths: list[Path], models_dir: Path, parent: str | None = None, data_epoch: int | None = None,
                 horizon: int = 50) -> Any:
    """Fit, save and register a scripted reach policy; returns the registry's ModelInfo."""
    from h1_training.training.registry import ModelRegistry

    t0 = time.perf_counter()
    finals, skipped = [], {}
    files = episode_files(paths)
    for f in files:
        try:
            ep = load_episode(f, with_images=False)
        except ValueError as exc:
            skipped[str(f)] = str(exc)
            continue
        if ep.length == 0:
            skipped[str(f)] = "empty episode"
            continue
        finals.append(np.asarray(ep.qpos[-1], np.float64))
    if not finals:
        raise ValueError(f"no usable episode in {[str(p) for p in paths]} (skipped: {skipped})")
    for path, reason in skipped.items():
        log.warning("scripted fit skips %s: %s", path, reason)
    target = np.median(np.stack(finals), axis=0)
    registry = ModelRegistry(Path(models_dir))
    staged = registry.staging_dir()
    policy = ScriptedPolicy(ScriptedConfig(mode="reach", target=[float(x) for x in target], horizon=horizon))
    policy.save(staged)
    return registry.commit(
        staged, "scripted", parent=parent,
        dataset={"sources": [str(p) for p in paths], "episodes": len(finals), "skipped": skipped,
                 "data_epoch": data_epoch},
        config={"mode": "reach", "horizon": horizon, "fit": "median final qpos"},
        metrics={"duration_s": round(time.perf_counter() - t0, 3), "episodes": len(finals),
                 "target": [float(x) for x in policy.target]},
    )
