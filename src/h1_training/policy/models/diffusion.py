"""Diffusion Policy (Chi et al. 2023) from LeRobot 0.4.4, with our defaults.

Our defaults: no pretrained backbone (LeRobot's default too) and no random crop (LeRobot's 84x84 crop assumes
PushT-sized images; set ``crop_shape`` or ``resize_shape`` in the training options for real cameras).
Inference returns ``n_action_steps`` rows (the part of the horizon meant for execution).
"""

from __future__ import annotations

from typing import Any

from h1_training.policy.models.adapter import PolicyType


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
    description="LeRobot Diffusion Policy: ResNet18 + spatial softmax, 1D conv U-Net denoiser (DDPM)",
    config_class=_config_class,
    policy_class=_policy_class,
    defaults={"pretrained_backbone_weights": None, "crop_shape": None},
    horizon_field="n_action_steps",
    predict_chunk=_predict_chunk,
)
