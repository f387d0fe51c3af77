"""What a training job accepts on the wire (the server's ``POST /train``): the policy types it can train and the
devices it can train on, with the default device. The one place for them: the server's jobs and trainer, the
epoch watcher, the workflow manager (its ``training.*`` parameters) and the CLIs read them here, because the
robot side and the GPU side both speak this wire (policy/ is importable from both).

``auto`` means cuda when torch sees a GPU, else cpu (``accelerate`` decides for training; :func:`resolve_device`
for serving); pick GPUs with ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

from h1_training.policy.models import POLICY_TYPES as _LEARNED  # a name table: no torch import

# Learned policy types (policy/models) and "scripted", which the train worker fits without torch.
LEARNED_POLICY_TYPES: tuple[str, ...] = tuple(_LEARNED)
TRAINABLE_POLICY_TYPES: tuple[str, ...] = (*LEARNED_POLICY_TYPES, "scripted")

TRAINING_DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
DEFAULT_TRAINING_DEVICE = "auto"


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu`` (also without torch); any other name as it is
    (``cuda:1`` picks a GPU for serving)."""
    if name != "auto":
        return name
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
