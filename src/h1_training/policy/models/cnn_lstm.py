"""CNN-LSTM: ours, small and fast — a CNN encoder per camera, an LSTM over a short observation history, and an MLP
head that predicts an action chunk [chunk_size, 14].

It is a LeRobot ``PreTrainedPolicy`` (config registered as ``"cnn_lstm"``, processors from
``make_cnn_lstm_pre_post_processors`` — the name LeRobot's processor factory looks up for third-party types), so
training, normalization, saving and serving go through exactly the same code as ACT and Diffusion.

History: training samples ``n_obs_steps`` observations ``history_stride`` frames apart (0.1 s at 50 Hz by default)
through the dataset's delta timestamps. At inference the adapter keeps the last ``n_obs_steps`` observations it was
given (filled by repetition after ``reset()``, as LeRobot pads episode starts); the history matches training when
the client queries every ``history_stride`` frames and is an approximation otherwise.

Per camera: 3 strided conv blocks (GroupNorm, ReLU) on the image resized to ``image_size``, pooled to a 3x4 grid
(keeps coarse spatial layout) and projected to ``feature_dim``. The state gets its own projection. Loss: L1 on the
normalized chunk, padded steps masked (as ACT).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor, nn

from h1_training.policy.models.adapter import PolicyType
from h1_training.policy.models.base import ACTION_KEY, STATE_KEY

_POOL = (3, 4)


@PreTrainedConfig.register_subclass("cnn_lstm")
@dataclass
class CNNLSTMConfig(PreTrainedConfig):
    n_obs_steps: int = 3
    history_stride: int = 5
    chunk_size: int = 50
    n_action_steps: int = 50
    image_size: tuple[int, int] = (96, 128)          # (H, W) the encoder sees
    cnn_channels: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128                           # per camera and for the state
    lstm_hidden: int = 256
    lstm_layers: int = 1
    mlp_hidden: int = 512
    dropout: float = 0.1
    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.MEAN_STD,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )
    optimizer_lr: float = 3e-4
    optimizer_weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_obs_steps < 1 or self.history_stride < 1:
            raise ValueError("n_obs_steps and history_stride must be >= 1")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"n_action_steps must be in 1..chunk_size ({self.chunk_size}), got {self.n_action_steps}")
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise ValueError(f"image_size must be (H, W) of at least 16 px, got {self.image_size}")
        if not self.cnn_channels:
            raise ValueError("cnn_channels must name at least one conv block")

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(lr=self.optimizer_lr, weight_decay=self.optimizer_weight_decay)

    def get_scheduler_preset(self) -> None:
        return None

    def validate_features(self) -> None:
        if not self.image_features and self.robot_state_feature is None:
            raise ValueError("cnn_lstm needs at least one camera or observation.state among the inputs")
        if self.action_feature is None:
            raise ValueError("cnn_lstm needs an 'action' output feature")

    @property
    def observation_delta_indices(self) -> list[int]:
        return list(range(-(self.n_obs_steps - 1) * self.history_stride, 1, self.history_stride))

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None


def chunk_l1_loss(pred: Tensor, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
    """L1 between a predicted action chunk and the batch's target chunk, padded steps (``action_is_pad``, past an
    episode's end) masked out; the training loss of our chunk policies (CNN-LSTM, keypoint)."""
    err = F.l1_loss(pred, batch[ACTION_KEY], reduction="none")
    if "action_is_pad" in batch:
        err = err * ~batch["action_is_pad"].unsqueeze(-1)
    per_sample = err.mean(dim=(1, 2))
    loss = per_sample.mean() if reduction == "mean" else per_sample
    return loss, {"l1_loss": float(per_sample.mean().item())}


class _ImageEncoder(nn.Module):
    def __init__(self, channels: tuple[int, ...], feature_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2),
                       nn.GroupNorm(max(1, c_out // 16), c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(_POOL))
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(c_in * _POOL[0] * _POOL[1], feature_dim), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.conv(x))


class CNNLSTMPolicy(PreTrainedPolicy):
    config_class = CNNLSTMConfig
    name = "cnn_lstm"

    def __init__(self, config: CNNLSTMConfig, dataset_stats: dict | None = None, **kwargs: Any) -> None:
        super().__init__(config)
        config.validate_features()
        self.config = config
        self.image_keys = list(config.image_features)
        # ModuleDict keys may not contain '.'
        self.encoders = nn.ModuleDict({
            k.replace(".", "_"): _ImageEncoder(tuple(config.cnn_channels), config.feature_dim) for k in self.image_keys
        })
        state = config.robot_state_feature
        self.state_dim = int(state.shape[0]) if state is not None else 0
        self.state_proj = nn.Linear(self.state_dim, config.feature_dim) if self.state_dim else None
        in_dim = config.feature_dim * (len(self.image_keys) + (1 if self.state_dim else 0))
        self.lstm = nn.LSTM(in_dim, config.lstm_hidden, num_layers=config.lstm_layers, batch_first=True,
                            dropout=config.dropout if config.lstm_layers > 1 else 0.0)
        self.action_dim = int(config.action_feature.shape[0])
        self.head = nn.Sequential(
            nn.Linear(config.lstm_hidden + in_dim, config.mlp_hidden), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.mlp_hidden, config.chunk_size * self.action_dim),
        )
        self.reset()

    def get_optim_params(self) -> Any:
        return self.parameters()

    def reset(self) -> None:
        self._history: deque[dict[str, Tensor]] = deque(maxlen=self.config.n_obs_steps)
        self._action_queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)

    def _features(self, batch: dict[str, Tensor]) -> Tensor:
        """[B, T, in_dim] per-step features from [B, T, ...] inputs."""
        parts = []
        for key in self.image_keys:
            imgs = batch[key]
            b, t = imgs.shape[:2]
            flat = imgs.reshape(b * t, *imgs.shape[2:])
            if tuple(flat.shape[-2:]) != tuple(self.config.image_size):
                flat = F.interpolate(flat, size=tuple(self.config.image_size), mode="bilinear", align_corners=False)
            parts.append(self.encoders[key.replace(".", "_")](flat).reshape(b, t, -1))
        if self.state_proj is not None:
            parts.append(self.state_proj(batch[STATE_KEY]))
        return torch.cat(parts, dim=-1)

    def _chunk(self, batch: dict[str, Tensor]) -> Tensor:
        feats = self._features(batch)
        out, _ = self.lstm(feats)
        # The head sees the LSTM summary and the current step's features (a skip path that trains fast).
        h = torch.cat([out[:, -1], feats[:, -1]], dim=-1)
        return self.head(h).reshape(-1, self.config.chunk_size, self.action_dim)

    def _with_time_axis(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = dict(batch)
        for key in self.image_keys:
            if out[key].ndim == 4:
                out[key] = out[key].unsqueeze(1)
        if self.state_dim and out[STATE_KEY].ndim == 2:
            out[STATE_KEY] = out[STATE_KEY].unsqueeze(1)
        return out

    def forward(self, batch: dict[str, Tensor], reduction: str = "mean") -> tuple[Tensor, dict]:
        batch = self._with_time_axis(batch)
        return chunk_l1_loss(self._chunk(batch), batch, reduction)

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        """One observation (no time axis) joins the history; the chunk is predicted from the whole history."""
        self.eval()
        step = {k: batch[k] for k in self.image_keys}
        if self.state_dim:
            step[STATE_KEY] = batch[STATE_KEY]
        if not self._history:
            self._history.extend([step] * self.config.n_obs_steps)
        else:
            self._history.append(step)
        stacked = {k: torch.stack([h[k] for h in self._history], dim=1) for k in step}
        return self._chunk(stacked)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], **kwargs: Any) -> Tensor:
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            self._action_queue.extend(chunk.transpose(0, 1))
        return self._action_queue.popleft()


def make_cnn_lstm_pre_post_processors(config: CNNLSTMConfig, dataset_stats: dict | None = None) -> tuple[Any, Any]:
    """The same pipelines as LeRobot's ACT: normalize inputs/targets with dataset stats, unnormalize actions."""
    from lerobot.processor import (
        AddBatchDimensionProcessorStep,
        DeviceProcessorStep,
        NormalizerProcessorStep,
        PolicyProcessorPipeline,
        RenameObservationsProcessorStep,
        UnnormalizerProcessorStep,
    )
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
    from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

    features = {**config.input_features, **config.output_features}
    pre = PolicyProcessorPipeline(
        steps=[
            RenameObservationsProcessorStep(rename_map={}),
            AddBatchDimensionProcessorStep(),
            DeviceProcessorStep(device=config.device),
            NormalizerProcessorStep(features=features, norm_map=config.normalization_mapping,
                                    stats=dataset_stats, device=config.device),
        ],
        name=POLICY_PREPROCESSOR_DEFAULT_NAME,
    )
    post = PolicyProcessorPipeline(
        steps=[
            UnnormalizerProcessorStep(features=config.output_features, norm_map=config.normalization_mapping,
                                      stats=dataset_stats),
            DeviceProcessorStep(device="cpu"),
        ],
        name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
        to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action,
    )
    return pre, post


CNN_LSTM = PolicyType(
    name="cnn_lstm",
    description="ours: small CNN per camera + LSTM over a short history + MLP head predicting an action chunk",
    config_class=lambda: CNNLSTMConfig,
    policy_class=lambda: CNNLSTMPolicy,
    defaults={},
    horizon_field="chunk_size",
)
