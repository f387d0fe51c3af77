"""Learned policies: the registry of policy types (the one place that lists them) and ``load_policy``.

    from h1_training.policy.models import load_policy, get_policy_type, POLICY_TYPES
    policy = load_policy(Path("models/models/v3-act-..."), device="cpu")
    policy.infer({"images": {...}, "state": state, "prompt": "pick"})["actions"]   # [H, 14] float32

Types are imported lazily (``"module:attribute"``) so that listing them, or serving the scripted policy, needs no
torch or lerobot.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from h1_training.policy.models.base import Policy, ensure_offline_hub

if TYPE_CHECKING:
    from h1_training.policy.models.adapter import PolicyType

# name -> "module:attribute" of its PolicyType. Add a policy type here and nowhere else.
POLICY_TYPES: dict[str, str] = {
    "act": "h1_training.policy.models.act:ACT",
    "diffusion": "h1_training.policy.models.diffusion:DIFFUSION",
    "cnn_lstm": "h1_training.policy.models.cnn_lstm:CNN_LSTM",
    "keypoint": "h1_training.policy.models.keypoint:KEYPOINT",
}

__all__ = ["POLICY_TYPES", "Policy", "get_policy_type", "load_policy", "policy_type_of"]


def get_policy_type(name: str) -> PolicyType:
    if name not in POLICY_TYPES:
        raise ValueError(f"unknown policy type {name!r}; known: {sorted(POLICY_TYPES)}")
    ensure_offline_hub()  # before the type's module imports lerobot
    module_name, attr = POLICY_TYPES[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


def policy_type_of(model_dir: Path) -> str:
    """The policy type of a model directory: ``model.json`` (ours) or, for a plain LeRobot checkpoint
    (``lerobot-train``'s ``pretrained_model/``), the ``type`` in its ``config.json``."""
    model_dir = Path(model_dir)
    for name, key in (("model.json", "policy_type"), ("config.json", "type")):
        path = model_dir / name
        if path.exists():
            try:
                value = json.loads(path.read_text()).get(key)
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: not a valid JSON object ({exc})") from exc
            if value:
                return str(value)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    raise ValueError(f"{model_dir}: no model.json or config.json saying which policy type it holds")


def load_policy(model_dir: Path, device: str = "cpu", diffusion_sampling: str | None = None) -> Policy:
    """Load the model in ``model_dir`` for inference on ``device`` ("cpu", "cuda", "cuda:1", ...).
    ``diffusion_sampling`` ("ddim:10", "ddpm", ...: ``diffusion.parse_sampling``) replaces the sampler of a
    Diffusion model; other policy types ignore it."""
    ptype = policy_type_of(model_dir)
    overrides = None
    if diffusion_sampling and ptype == "diffusion":
        from h1_training.policy.models.diffusion import parse_sampling

        overrides = parse_sampling(diffusion_sampling)
    return get_policy_type(ptype).load(Path(model_dir), device=device, overrides=overrides)
