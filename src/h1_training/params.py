"""Declared-once parameter specs: type, default, description and bounds (no rclpy).

A node lists its parameters as ``ParamSpec`` objects; ``h1_training.nodes.common`` turns them into ROS
parameter descriptors (with ranges) and rejects bad values through ``check_value``, so ``ros2 param set``
gets a reason, and the same check guards values read from YAML at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: Sequence[str] = field(default_factory=tuple)
    read_only: bool = False

    def __post_init__(self) -> None:
        if self.default is None:
            raise ValueError(f"parameter {self.name}: default may not be None (it fixes the type)")
        reason = check_value(self, self.default)
        if reason:
            raise ValueError(f"parameter {self.name}: default {self.default!r} is invalid: {reason}")

    @property
    def kind(self) -> type:
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, (list, tuple)):
            return list
        return type(self.default)


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Return None when ``value`` is acceptable for ``spec``, else a one-line reason."""
    kind = spec.kind
    if kind is bool:
        if not isinstance(value, bool):
            return f"{spec.name} must be true or false, got {value!r}"
        return None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{spec.name} must be a number, got {value!r}"
        if not math.isfinite(float(value)):
            return f"{spec.name} must be finite, got {value!r}"
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{spec.name} must be an integer, got {value!r}"
    elif kind is str:
        if not isinstance(value, str):
            return f"{spec.name} must be a string, got {value!r}"
        if spec.choices and value not in spec.choices:
            return f"{spec.name} must be one of {', '.join(spec.choices)}; got {value!r}"
        return None
    elif kind is list:
        if not isinstance(value, (list, tuple)):
            return f"{spec.name} must be a list, got {value!r}"
        return None
    if spec.min is not None and value < spec.min:
        return f"{spec.name}={value} is below the minimum {spec.min}"
    if spec.max is not None and value > spec.max:
        return f"{spec.name}={value} is above the maximum {spec.max}"
    return None


def check_all(specs: Sequence[ParamSpec], values: dict[str, Any]) -> list[str]:
    """Reasons for every invalid value in ``values`` (unknown names included)."""
    by_name = {s.name: s for s in specs}
    reasons = []
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            reasons.append(f"unknown parameter {name!r}")
            continue
        reason = check_value(spec, value)
        if reason:
            reasons.append(reason)
    return reasons
