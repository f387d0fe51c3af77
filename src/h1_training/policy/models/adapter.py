"""One policy type = a LeRobot config class + policy class + our defaults; one adapter serves all of them.

ACT and Diffusion are LeRobot 0.4.4's own (``lerobot.policies.act`` / ``.diffusion``); the CNN-LSTM is ours but is a
``PreTrainedPolicy`` too, so the three share everything: features from the dataset, normalization in LeRobot's
processor pipelines (saved beside the weights), ``forward(batch) -> (loss, info)`` for training,
``save_pretrained``/``from_pretrained`` on disk, and ``LeRobotPolicyAdapter`` for inference. What differs per type is
data: the defaults (no pretrained backbone: nothing is downloaded) and how a chunk is predicted.

A model directory::

    config.json  model.safetensors                         # policy.save_pretrained
    policy_preprocessor.json  policy_postprocessor.json    # normalization stats (+ *.safetensors)
    model.json                                             # ours: id, policy_type, dataset, metrics, parent, ...
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from h1_training.policy.models.base import (
    IMAGE_PREFIX,
    STATE_KEY,
    ensure_offline_hub,
    observation_image,
    observation_prompt,
    observation_state,
)

log = logging.getLogger("h1_training.policy")

MODEL_JSON = "model.json"


def _default_processors(config: Any, stats: dict | None) -> tuple[Any, Any]:
    from lerobot.policies.factory import make_pre_post_processors

    return make_pre_post_processors(config, dataset_stats=stats)


def _default_predict_chunk(policy: Any, batch: dict) -> Any:
    return policy.predict_action_chunk(batch)


@dataclass(frozen=True)
class PolicyType:
    """A trainable, servable policy family. ``config_class``/``policy_class`` are given as callables returning the
    class so that importing this module never imports torch or lerobot."""

    name: str
    description: str
    config_class: Callable[[], type]
    policy_class: Callable[[], type]
    defaults: dict[str, Any] = field(default_factory=dict)       # our overrides of the config's defaults
    horizon_field: str = "chunk_size"                             # config field = rows returned per inference
    make_processors: Callable[[Any, dict | None], tuple[Any, Any]] = _default_processors
    predict_chunk: Callable[[Any, dict], Any] = _default_predict_chunk
    # Load a local torchvision ResNet state_dict file into the vision backbone (None: not supported by this type).
    load_backbone: Callable[[Any, Path], None] | None = None
    # Checks of a config LeRobot's own validation leaves to the first inference (ValueError); None: none.
    check_config: Callable[[Any], None] | None = None

    # -- configuration -----------------------------------------------------------------------------------
    def make_config(self, features: dict[str, Any], device: str, overrides: dict[str, Any] | None = None) -> Any:
        """A fresh config for ``features`` (LeRobot PolicyFeatures by key) with our defaults, then ``overrides``."""
        from lerobot.configs.types import FeatureType

        cls = self.config_class()
        values = {**self.defaults, **(overrides or {})}
        config = cls(device=device, **_coerce(cls, values))
        config.output_features = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
        config.input_features = {k: f for k, f in features.items() if k not in config.output_features}
        config.validate_features()
        if self.check_config is not None:
            self.check_config(config)
        return config

    def apply_overrides(self, config: Any, overrides: dict[str, Any]) -> Any:
        """Apply ``overrides`` to an existing config (fine-tuning keeps the parent's architecture)."""
        cls = type(config)
        values = _coerce(cls, overrides)
        new = dataclasses.replace(config, **values) if values else config
        if self.check_config is not None:
            self.check_config(new)
        return new

    def horizon(self, config: Any) -> int:
        return int(getattr(config, self.horizon_field))

    # -- disk --------------------------------------------------------------------------------------------
    def save(self, model_dir: Path, policy: Any, preprocessor: Any, postprocessor: Any) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        policy.save_pretrained(model_dir)
        preprocessor.save_pretrained(model_dir)
        postprocessor.save_pretrained(model_dir)

    def load_config(self, model_dir: Path, device: str) -> Any:
        ensure_offline_hub()
        self.config_class()  # registers the config subclass with draccus before parsing
        from lerobot.configs.policies import PreTrainedConfig

        config = PreTrainedConfig.from_pretrained(str(model_dir))
        if not isinstance(config, self.config_class()):
            raise ValueError(f"{model_dir}: config.json holds a {config.type!r} policy, not {self.name!r}")
        config.device = device
        return config

    def load_weights(self, model_dir: Path, config: Any) -> Any:
        """The policy with the weights in ``model_dir`` (strict: a shape mismatch is an error, not a warning)."""
        return self.policy_class().from_pretrained(str(model_dir), config=config, strict=True)

    def load_processors(self, model_dir: Path, config: Any, device: str) -> tuple[Any, Any]:
        from lerobot.policies.factory import make_pre_post_processors

        return make_pre_post_processors(
            config, pretrained_path=str(model_dir),
            preprocessor_overrides={"device_processor": {"device": device}},
            postprocessor_overrides={"device_processor": {"device": "cpu"}},
        )

    def load(self, model_dir: Path, device: str = "cpu",
             overrides: dict[str, Any] | None = None) -> LeRobotPolicyAdapter:
        """``overrides``: config options applied before the model is built that do not change its weights (e.g.
        Diffusion's sampler, ``diffusion.parse_sampling``)."""
        config = self.load_config(model_dir, device)
        if overrides:
            config = self.apply_overrides(config, overrides)
        policy = self.load_weights(model_dir, config)
        preprocessor, postprocessor = self.load_processors(model_dir, config, device)
        info = read_model_json(model_dir)
        return LeRobotPolicyAdapter(self, policy, preprocessor, postprocessor, info, model_dir)


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Check override names against the config's fields and turn JSON lists into the tuples LeRobot expects."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(fields)}")
    out = {}
    for key, value in values.items():
        default = fields[key].default
        if isinstance(value, list) and (isinstance(default, tuple) or "tuple" in str(fields[key].type)):
            value = tuple(value)
        out[key] = value
    return out


def read_model_json(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_JSON
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


class LeRobotPolicyAdapter:
    """The ``Policy`` protocol over a LeRobot ``PreTrainedPolicy`` and its processors."""

    def __init__(self, ptype: PolicyType, policy: Any, preprocessor: Any, postprocessor: Any,
                 info: dict[str, Any], model_dir: Path) -> None:
        import torch

        self.ptype = ptype
        self.policy = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        config = policy.config
        self.device = torch.device(config.device)
        used = getattr(config, "used_image_keys", None) or list(config.image_features)  # what the model looks at
        self.image_features = {k: tuple(f.shape) for k, f in config.image_features.items() if k in used}
        state = config.robot_state_feature
        self.state_dim = int(state.shape[0]) if state is not None else 0
        self.action_dim = int(config.action_feature.shape[0])
        self.metadata: dict[str, Any] = {
            "policy_type": ptype.name,
            "model_id": info.get("id", Path(model_dir).name),
            "epoch": info.get("epoch"),
            "action_horizon": ptype.horizon(config),
            "action_dim": self.action_dim,
            "state_dim": self.state_dim,
            "fps": (info.get("dataset") or {}).get("fps"),
            "cameras": [k[len(IMAGE_PREFIX):] for k in self.image_features],
            "image_shape_chw": list(next(iter(self.image_features.values()), ())),
            "device": str(self.device),
            "created": info.get("created"),
        }
        scheduler = getattr(policy, "diffusion", None) and getattr(policy.diffusion, "noise_scheduler", None)
        if scheduler is not None:  # Diffusion: which sampler, how many denoising steps per inference
            self.metadata["sampling"] = {"scheduler": type(scheduler).__name__,
                                         "steps": int(policy.diffusion.num_inference_steps)}
        self.policy.eval()
        self.reset()

    def reset(self) -> None:
        self.policy.reset()

    def _batch(self, obs: dict) -> dict[str, Any]:
        import torch

        frame: dict[str, Any] = {}
        if self.state_dim:
            frame[STATE_KEY] = torch.from_numpy(observation_state(obs, self.state_dim))[None]
        for key, shape in self.image_features.items():
            img = observation_image(obs, key[len(IMAGE_PREFIX):], shape)
            frame[key] = torch.from_numpy(img)[None]
        frame["task"] = [observation_prompt(obs)]
        return frame

    def infer_batch(self, observations: list[dict]) -> np.ndarray:
        """Action chunks [N, H, action_dim] for N observations in one forward pass (for simulated evaluation of
        many episodes in lockstep; single-step policies only: no per-episode history is kept)."""
        import torch

        frames = [self._batch(obs) for obs in observations]
        batch: dict[str, Any] = {k: torch.cat([f[k] for f in frames]) for k in frames[0] if k != "task"}
        batch["task"] = [t for f in frames for t in f["task"]]
        with torch.inference_mode():
            chunk = self.postprocessor(self.ptype.predict_chunk(self.policy, self.preprocessor(batch)))
        out = chunk.detach().float().cpu().numpy().astype(np.float32)
        if out.ndim != 3 or out.shape[0] != len(observations) or not np.all(np.isfinite(out)):
            raise RuntimeError(f"{self.ptype.name} returned bad batched actions of shape {out.shape}")
        return out

    def infer(self, obs: dict) -> dict:
        import torch

        t0 = time.perf_counter()
        frame = self._batch(obs)  # ValueError on a malformed observation, before any model state changes
        with torch.inference_mode():
            batch = self.preprocessor(frame)
            chunk = self.ptype.predict_chunk(self.policy, batch)
            chunk = self.postprocessor(chunk)
        actions = chunk[0].detach().float().cpu().numpy().astype(np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise RuntimeError(f"{self.ptype.name} returned actions of shape {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise RuntimeError(f"{self.ptype.name} produced non-finite actions")
        return {"actions": actions, "policy_timing": {"infer_ms": (time.perf_counter() - t0) * 1e3}}
