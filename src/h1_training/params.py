"""Parameters declared once, on config dataclasses (no rclpy): type, default, description, range or choices,
read-only. The idea of ROS's ``generate_parameter_library``, in Python.

A field made with :func:`param` is a ROS parameter of every node whose config holds it::

    @dataclass
    class WorkerConfig:
        read_rate_hz: float = param(50.0, "hand state poll rate [Hz]", min=1.0, max=200.0, read_only=True)
        transport: str = param("tcp", "Modbus transport", choices=("tcp", "rtu"))
        internal_s: float = 0.5          # a plain field: configuration, not a ROS parameter

    @dataclass
    class HandNodeConfig:                # a node's config: its own parameters plus those of the logic it runs
        stale_after_s: float = param(0.25, "a reading older than this is stale [s]", min=0.02, max=10.0)
        worker: WorkerConfig = nested(WorkerConfig)   # WorkerConfig's parameters, same names, flattened

:func:`param_specs` lists the flattened :class:`ParamSpec` s (what ``nodes/common.py`` declares, what the
README tables are generated from); :func:`build` makes the config object from name -> value; ``check_value``
is the one place that says why a value is rejected (``ros2 param set``, YAML at start-up).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_PARAM = "h1_param"     # dataclass field metadata key: a ParamInfo
_NESTED = "h1_nested"   # dataclass field metadata key: a nested config dataclass whose parameters are ours too


@dataclass(frozen=True)
class ParamInfo:
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = False
    name: str | None = None   # the ROS name when it is not the field's (dotted names: ``workflow.auto_train``)


def param(default: Any, description: str, *, min: float | None = None, max: float | None = None,
          choices: Sequence[str] = (), read_only: bool = False, name: str | None = None) -> Any:
    """A dataclass field that is also a ROS parameter (see the module docstring). Lists get a fresh copy per
    instance; ``default`` fixes the ROS type (bool, int, float, str, list), so it may not be None. ``name``
    gives the ROS parameter a name a Python field cannot have (the RoArm seed's ``workflow.*`` names)."""
    info = ParamInfo(description, min, max, tuple(choices), read_only, name)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={_PARAM: info})
    return field(default=default, metadata={_PARAM: info})


def nested(cls: type) -> Any:
    """A field holding another config dataclass whose parameters become this one's (flattened, same names)."""
    return field(default_factory=cls, metadata={_NESTED: cls})


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def param_specs(cls: type) -> list[ParamSpec]:
    """Every parameter of config dataclass ``cls`` in declaration order, nested configs flattened in place.
    Raises ValueError for a name declared twice or an invalid default (at import of the node, not at run)."""
    specs: list[ParamSpec] = []
    for f in dataclasses.fields(cls):
        if _NESTED in f.metadata:
            specs += param_specs(f.metadata[_NESTED])
        elif _PARAM in f.metadata:
            info: ParamInfo = f.metadata[_PARAM]
            specs.append(ParamSpec(info.name or f.name, _default(f), info.description, info.min, info.max, info.choices,
                                   info.read_only))
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"{cls.__name__}: parameter {spec.name} is declared twice")
        seen.add(spec.name)
    return specs


def build(cls: type, values: dict[str, Any]) -> Any:
    """An instance of config dataclass ``cls`` from parameter values by name (missing ones keep the default;
    plain fields keep theirs). The dataclass's own ``__post_init__`` checks run."""
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if _NESTED in f.metadata:
            kw[f.name] = build(f.metadata[_NESTED], values)
        elif _PARAM in f.metadata and (f.metadata[_PARAM].name or f.name) in values:
            kw[f.name] = values[f.metadata[_PARAM].name or f.name]
    return cls(**kw)


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


def markdown_table(specs: Sequence[ParamSpec]) -> str:
    """The README's table of these parameters (generated: scripts/param_tables.py)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| name | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    for s in specs:
        if s.choices:
            allowed = ", ".join(f"`{c}`" for c in s.choices)
        elif s.min is not None or s.max is not None:
            allowed = f"{'' if s.min is None else s.min} .. {'' if s.max is None else s.max}".strip()
        else:
            allowed = ""
        default = repr(list(s.default)) if isinstance(s.default, (list, tuple)) else repr(s.default)
        kind = s.kind.__name__ + (", read-only" if s.read_only else "")
        rows.append(f"| `{s.name}` | {kind} | `{cell(default)}` | {cell(allowed)} | {cell(s.description)} |")
    return "\n".join(rows)
