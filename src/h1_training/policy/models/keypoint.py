"""Keypoint policy: ours, the smallest image policy that learns a reach from pixels on a CPU -- a small CNN ending
in a spatial softmax (each feature map becomes the image position where it fires, Levine et al. 2016, "End-to-End
Training of Deep Visuomotor Policies"), the keypoints joined with [sin q, cos q, q], and an MLP that predicts an
action chunk [chunk_size, 14].

Why this shape: on 2 CPU cores a policy must train in about a minute per round. A spatial softmax hands the MLP
*where* things are in the image (the object, the hand) as coordinates, which is what a reach needs; the same CNN
flattened into the MLP learned the target's place far more slowly in a feasibility test on this machine
(``LEARNING_NOTES``). Only the cameras named in ``cameras`` are used (default: the head camera; the simulated wrist
cameras print the distance to the object on the image, which a policy must not read).

It is a LeRobot ``PreTrainedPolicy`` (config registered as ``"keypoint"``; processors from
``make_keypoint_pre_post_processors``), so the project's trainer, registry, server and adapter handle it like ACT.
Images are normalized by the dataset's per-channel statistics; the state is not normalized (the network takes its
sine and cosine); actions are normalized (mean/std) and the loss is L1 on the normalized chunk, padded steps masked.
Inference predicts a chunk per observation (replan every step; the server returns the whole chunk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import LRSchedulerConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor, nn

from h1_training.policy.models.adapter import PolicyType
from h1_training.policy.models.base import IMAGE_PREFIX, STATE_KEY
from h1_training.policy.models.cnn_lstm import chunk_l1_loss, make_cnn_lstm_pre_post_processors


@LRSchedulerConfig.register_subclass("keypoint_cosine")
@dataclass
class CosineToFloorSchedulerConfig(LRSchedulerConfig):
    """Cosine decay from the optimizer's learning rate to ``floor`` times it over the job's steps (1e-3 -> 1e-4)."""

    num_warmup_steps: int = 0
    floor: float = 0.1

    def build(self, optimizer: torch.optim.Optimizer, num_training_steps: int) -> Any:
        import math

        from torch.optim.lr_scheduler import LambdaLR

        total = max(1, num_training_steps)

        def factor(step: int) -> float:
            s = min(step, total) / total
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * s))

        return LambdaLR(optimizer, factor)


@PreTrainedConfig.register_subclass("keypoint")
@dataclass
class KeypointConfig(PreTrainedConfig):
    n_obs_steps: int = 1
    chunk_size: int = 10
    n_action_steps: int = 1
    cameras: tuple[str, ...] = ("cam_head",)       # which of the dataset's cameras the policy sees
    cnn_channels: tuple[int, ...] = (16, 32, 32)   # conv 5x5/2, then 3x3 (the second one strided too)
    num_keypoints: int = 32
    mlp_hidden: int = 256
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.MEAN_STD,
            "STATE": NormalizationMode.IDENTITY,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )
    optimizer_lr: float = 1e-3
    optimizer_weight_decay: float = 1e-4
    lr_floor: float = 0.1                           # the learning rate ends a job at lr * lr_floor

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_obs_steps != 1:
            raise ValueError("the keypoint policy sees one observation (n_obs_steps = 1)")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"n_action_steps must be in 1..chunk_size ({self.chunk_size}), got {self.n_action_steps}")
        if len(self.cnn_channels) < 2 or self.num_keypoints < 1 or self.mlp_hidden < 1:
            raise ValueError("cnn_channels needs at least 2 conv blocks; num_keypoints and mlp_hidden >= 1")
        if not 0 < self.lr_floor <= 1:
            raise ValueError(f"lr_floor must be in (0, 1], got {self.lr_floor}")

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, weight_decay=self.optimizer_weight_decay, grad_clip_norm=10.0)

    def get_scheduler_preset(self) -> CosineToFloorSchedulerConfig:
        return CosineToFloorSchedulerConfig(floor=self.lr_floor)

    @property
    def used_image_keys(self) -> list[str]:
        return [IMAGE_PREFIX + c for c in self.cameras]

    def validate_features(self) -> None:
        missing = [k for k in self.used_image_keys if k not in self.image_features]
        if missing:
            raise ValueError(f"keypoint: the dataset has no camera {missing} (has {sorted(self.image_features)})")
        if self.robot_state_feature is None or self.action_feature is None:
            raise ValueError("keypoint needs observation.state and action features")

    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None


class SpatialSoftmax(nn.Module):
    """[B, K, H, W] feature maps -> [B, 2K] expected (x, y) in [-1, 1] of each map's softmax."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, k = x.shape[:2]
        attention = F.softmax(x.reshape(b, k, -1), dim=-1)
        return (attention @ self.grid).reshape(b, 2 * k)


class KeypointEncoder(nn.Module):
    def __init__(self, channels: tuple[int, ...], num_keypoints: int, image_hw: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, h, w = 3, image_hw[0], image_hw[1]
        for i, c_out in enumerate(channels):
            k, stride = (5, 2) if i == 0 else (3, 2 if i == 1 else 1)
            layers += [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2), nn.ReLU(inplace=True)]
            h, w = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
            c_in = c_out
        layers.append(nn.Conv2d(c_in, num_keypoints, 1))
        self.conv = nn.Sequential(*layers)
        self.softmax = SpatialSoftmax(h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.softmax(self.conv(x))


class KeypointPolicy(PreTrainedPolicy):
    config_class = KeypointConfig
    name = "keypoint"

    def __init__(self, config: KeypointConfig, dataset_stats: dict | None = None, **kwargs: Any) -> None:
        super().__init__(config)
        config.validate_features()
        self.config = config
        self.image_keys = config.used_image_keys
        self.encoders = nn.ModuleDict({
            k.replace(".", "_"): KeypointEncoder(tuple(config.cnn_channels), config.num_keypoints,
                                                 tuple(config.image_features[k].shape[-2:]))
            for k in self.image_keys
        })
        self.state_dim = int(config.robot_state_feature.shape[0])
        self.action_dim = int(config.action_feature.shape[0])
        in_dim = 2 * config.num_keypoints * len(self.image_keys) + 3 * self.state_dim
        self.head = nn.Sequential(
            nn.Linear(in_dim, config.mlp_hidden), nn.ReLU(),
            nn.Linear(config.mlp_hidden, config.mlp_hidden), nn.ReLU(),
            nn.Linear(config.mlp_hidden, config.chunk_size * self.action_dim),
        )
        self.reset()

    def get_optim_params(self) -> Any:
        return self.parameters()

    def reset(self) -> None:
        self._queue: list[Tensor] = []

    def _chunk(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [self.encoders[k.replace(".", "_")](batch[k]) for k in self.image_keys]
        q = batch[STATE_KEY]
        parts += [torch.sin(q), torch.cos(q), q]
        return self.head(torch.cat(parts, dim=-1)).reshape(-1, self.config.chunk_size, self.action_dim)

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        return chunk_l1_loss(self._chunk(batch), batch, reduction)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        self.eval()
        return self._chunk(batch)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        if not self._queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            self._queue = list(chunk.transpose(0, 1))
        return self._queue.pop(0)


def make_keypoint_pre_post_processors(config: KeypointConfig, dataset_stats: dict | None = None) -> tuple[Any, Any]:
    """LeRobot's standard pipelines (as ACT's), found by name by LeRobot's processor factory."""
    return make_cnn_lstm_pre_post_processors(config, dataset_stats)  # type: ignore[arg-type]


KEYPOINT = PolicyType(
    name="keypoint",
    description="ours: small CNN + spatial-softmax keypoints joined with [sin q, cos q, q], MLP 256-256 predicting "
                "a 10-step chunk (trains in about a minute on 2 CPU cores)",
    config_class=lambda: KeypointConfig,
    policy_class=lambda: KeypointPolicy,
    defaults={},
    horizon_field="chunk_size",
    make_processors=make_keypoint_pre_post_processors,
)
