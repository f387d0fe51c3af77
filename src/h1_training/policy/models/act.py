"""ACT (Action Chunking with Transformers, Zhao et al. 2023) from LeRobot 0.4.4, with our defaults.

Our defaults: no pretrained ResNet weights (``pretrained_backbone_weights=None``: nothing is downloaded at run time;
the training option ``backbone_weights`` loads a local torchvision ResNet
state_dict file instead) and a 1 s chunk at 50 Hz (``chunk_size=50``) instead of ALOHA's 100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from h1_training.policy.models.adapter import PolicyType


def _config_class() -> type:
    from lerobot.policies.act.configuration_act import ACTConfig

    return ACTConfig


def _policy_class() -> type:
    from lerobot.policies.act.modeling_act import ACTPolicy

    return ACTPolicy


def _load_backbone(policy: Any, path: Path) -> None:
    """ACT's backbone is torchvision's ResNet minus avgpool/fc (IntermediateLayerGetter keeps the module names), so
    a ``resnet18(...).state_dict()`` saved with ``torch.save`` loads directly."""
    import torch

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    missing, unexpected = policy.model.backbone.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: not a {policy.config.vision_backbone} state_dict "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


ACT = PolicyType(
    name="act",
    description="LeRobot ACT: ResNet18 per camera + transformer encoder/decoder, CVAE, action chunks",
    config_class=_config_class,
    policy_class=_policy_class,
    defaults={"pretrained_backbone_weights": None, "chunk_size": 50, "n_action_steps": 50},
    horizon_field="chunk_size",
    load_backbone=_load_backbone,
)
