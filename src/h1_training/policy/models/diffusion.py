"""Diffusion Policy (Chi et al. 2023) from LeRobot 0.4.4, with our defaults.

Our defaults: no pretrained backbone (LeRobot's default too) and no random crop (LeRobot's 84x84 crop assumes
PushT-sized images; set ``crop_shape`` or ``resize_shape`` in the training options for real cameras).
Inference returns ``n_action_steps`` rows (the part of the horizon meant for execution).

Sampling (``parse_sampling``, the option ``--diffusion-sampling`` of ``h1-training train`` and ``serve``): LeRobot's
default is DDPM with as many denoising steps as training timesteps (100), which is what makes a CPU inference take
seconds. ``ddim:10`` samples with diffusers' ``DDIMScheduler`` (Song et al. 2021) in 10 steps instead, LeRobot's own
``noise_scheduler_type="DDIM"`` and ``num_inference_steps``. DDIM shares DDPM's forward (noising) process and
training objective, so a model trained with DDPM is sampled with DDIM as is: the option given at serve time applies
to every Diffusion model the server loads, given at training time it is saved in the model's ``config.json``.
"""

from __future__ import annotations

import re
from typing import Any

from h1_training.policy.models.adapter import PolicyType

SAMPLERS = {"ddpm": "DDPM", "ddim": "DDIM"}  # our name -> LeRobot's noise_scheduler_type
_SAMPLING = re.compile(r"^(ddpm|ddim)(?::(\d+))?$")


def parse_sampling(text: str) -> dict[str, Any]:
    """``"ddim:10"`` / ``"ddpm"`` / ``"ddpm:50"`` -> the DiffusionConfig options that select it
    (``noise_scheduler_type``, ``num_inference_steps``; without a count: as many steps as training timesteps).
    ValueError on anything else; the step count is checked against the model's ``num_train_timesteps`` when the
    scheduler is made."""
    m = _SAMPLING.match(str(text).strip().lower())
    if m is None:
        raise ValueError(f"diffusion sampling must be ddpm[:STEPS] or ddim[:STEPS] (e.g. ddim:10), got {text!r}")
    steps = int(m.group(2)) if m.group(2) else None
    if steps is not None and steps < 1:
        raise ValueError(f"diffusion sampling needs at least 1 step, got {text!r}")
    return {"noise_scheduler_type": SAMPLERS[m.group(1)], "num_inference_steps": steps}


def check_sampling(config: Any) -> None:
    """ValueError when ``config`` asks for more inference steps than it was trained with timesteps (diffusers
    would fail at the first inference instead)."""
    steps = getattr(config, "num_inference_steps", None)
    if steps is not None and not 1 <= int(steps) <= int(config.num_train_timesteps):
        raise ValueError(f"num_inference_steps must be 1..{config.num_train_timesteps} (num_train_timesteps), "
                         f"got {steps}")


def _config_class() -> type:
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    return DiffusionConfig


def _policy_class() -> type:
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    return DiffusionPolicy


def _predict_chunk(policy: Any, batch: dict) -> Any:
    """What DiffusionPolicy.select_action does before sampling, without its per-step action queue: the
    observation joins the n_obs_steps history queue (filled by repetition at the start), then one chunk is sampled."""
    import torch
    from lerobot.policies.utils import populate_queues
    from lerobot.utils.constants import ACTION, OBS_IMAGES

    batch = {k: v for k, v in batch.items() if k != ACTION}  # the preprocessor leaves action=None in the batch
    if policy.config.image_features:
        batch[OBS_IMAGES] = torch.stack([batch[key] for key in policy.config.image_features], dim=-4)
    policy._queues = populate_queues(policy._queues, batch)
    return policy.predict_action_chunk(batch)


DIFFUSION = PolicyType(
    name="diffusion",
    description="LeRobot Diffusion Policy: ResNet18 + spatial softmax, 1D conv U-Net denoiser (DDPM or DDIM)",
    config_class=_config_class,
    policy_class=_policy_class,
    defaults={"pretrained_backbone_weights": None, "crop_shape": None},
    horizon_field="n_action_steps",
    predict_chunk=_predict_chunk,
    check_config=check_sampling,
)
