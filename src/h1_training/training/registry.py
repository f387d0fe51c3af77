"""The model registry: every trained model version on disk, with its metadata, and which one is deployed.

    root/
      models/<id>/model.json    # ModelInfo: id, policy_type, created, parent, dataset, config, metrics, epoch
      models/<id>/...           # weights + processors (policy/models/adapter.py)
      DEPLOYED                  # the deployed model's id (a pointer file, replaced atomically)

A model appears only complete: the trainer writes into a staging folder under ``root/.staging`` and ``commit``
renames it into ``models/`` in one step. ``epoch`` is the model's generation in this registry (1, 2, ...),
allocated at commit; ids are ``v<epoch>-<policy_type>-<UTC time>``. No torch needed here (the server lists models
without it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("h1_training.training")

MODELS_DIR = "models"
STAGING_DIR = ".staging"
DEPLOYED_FILE = "DEPLOYED"
MODEL_JSON = "model.json"
# Ids arrive over HTTP: letters, digits, '.', '_', '-' only, so an id can never name a path outside the registry.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ModelInfo:
    id: str
    policy_type: str
    created: str                       # ISO 8601 UTC
    parent: str | None = None          # id of the model it was fine-tuned from
    dataset: dict[str, Any] = field(default_factory=dict)   # path, repo_id, episodes, frames, fps, sources, ...
    config: dict[str, Any] = field(default_factory=dict)    # the TrainConfig and the policy's own config
    metrics: dict[str, Any] = field(default_factory=dict)   # final_loss, steps, duration_s, steps_per_s, ...
    epoch: int = 0                     # generation in this registry (1 = first model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelInfo:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        missing = {"id", "policy_type", "created"} - set(known)
        if missing:
            raise ValueError(f"model.json lacks {sorted(missing)}")
        return cls(**known)


def check_model_id(model_id: str) -> str:
    if not isinstance(model_id, str) or not _ID_RE.match(model_id):
        raise ValueError(f"invalid model id {model_id!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return model_id


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / MODELS_DIR

    # -- reading -----------------------------------------------------------------------------------------
    def path(self, model_id: str) -> Path:
        return self.models_dir / check_model_id(model_id)

    def get(self, model_id: str) -> ModelInfo:
        path = self.path(model_id) / MODEL_JSON
        if not path.exists():
            raise KeyError(f"no model {model_id!r} in {self.models_dir}")
        try:
            return ModelInfo.from_dict(json.loads(path.read_text()))
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable model metadata ({exc})") from exc

    def list(self) -> list[ModelInfo]:
        """All complete models, oldest first (by epoch). A damaged entry is logged and left out."""
        infos = []
        if not self.models_dir.is_dir():
            return infos
        for entry in sorted(self.models_dir.iterdir()):
            if not (entry / MODEL_JSON).exists():
                continue
            try:
                infos.append(self.get(entry.name))
            except (ValueError, KeyError) as exc:
                log.error("skipping model %s: %s", entry.name, exc)
        return sorted(infos, key=lambda m: (m.epoch, m.created, m.id))

    def latest(self, policy_type: str | None = None) -> ModelInfo | None:
        infos = [m for m in self.list() if policy_type is None or m.policy_type == policy_type]
        return infos[-1] if infos else None

    def deployed(self) -> ModelInfo | None:
        path = self.root / DEPLOYED_FILE
        if not path.exists():
            return None
        model_id = path.read_text().strip()
        try:
            return self.get(model_id)
        except (KeyError, ValueError) as exc:
            log.error("%s names %r, which is not a usable model: %s", path, model_id, exc)
            return None

    # -- writing -----------------------------------------------------------------------------------------
    def deploy(self, model_id: str) -> ModelInfo:
        info = self.get(model_id)  # KeyError when it does not exist: never point at nothing
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.root / DEPLOYED_FILE, info.id + "\n")
        log.info("deployed model %s (epoch %d)", info.id, info.epoch)
        return info

    def staging_dir(self) -> Path:
        """A fresh folder to write a model into before ``commit``."""
        staging = self.root / STAGING_DIR
        staging.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=staging, prefix="model-"))

    def commit(self, staged: Path, policy_type: str, *, parent: str | None = None, dataset: dict | None = None,
               config: dict | None = None, metrics: dict | None = None) -> ModelInfo:
        """Give the staged model an epoch and id, write its model.json and move it into ``models/`` atomically."""
        staged = Path(staged)
        if not staged.is_dir():
            raise FileNotFoundError(f"staged model {staged} does not exist")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        epoch = max((m.epoch for m in self.list()), default=0) + 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        while True:  # a concurrent commit may have taken this epoch: the rename below is the arbiter
            model_id = check_model_id(f"v{epoch}-{policy_type}-{stamp}")
            info = ModelInfo(id=model_id, policy_type=policy_type,
                             created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), parent=parent,
                             dataset=dataset or {}, config=config or {}, metrics=metrics or {}, epoch=epoch)
            (staged / MODEL_JSON).write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True, default=str))
            if any(p.name.startswith(f"v{epoch}-") for p in self.models_dir.iterdir()):
                epoch += 1
                continue
            try:
                os.rename(staged, self.models_dir / model_id)
            except OSError:
                epoch += 1
                continue
            log.info("registered model %s", model_id)
            return info

    def remove(self, model_id: str) -> None:
        """Delete a model (never the deployed one)."""
        deployed = self.deployed()
        if deployed is not None and deployed.id == model_id:
            raise ValueError(f"model {model_id!r} is deployed; deploy another one first")
        path = self.path(model_id)
        if not path.exists():
            raise KeyError(f"no model {model_id!r} in {self.models_dir}")
        shutil.rmtree(path)
