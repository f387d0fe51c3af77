"""Bring-up profiles: the single source of truth for which executables run with which parameter files.

A profile is ``config/bringup/<name>.yaml``::

    description: one line
    nodes:
      - name: h1_arm_node            # process label and ROS node name
        executable: h1_arm_node      # console script of this package
        params: [params/robot.yaml]  # relative to config/, applied in order
        args: []                     # extra command-line arguments (before --ros-args)
        ros: true                    # false for non-ROS processes (e.g. `h1-training serve`)

``h1-training up <profile>`` and ``launch/*.launch.py`` both read profiles through this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ProfileError(ValueError):
    pass


def config_dir() -> Path:
    """config/ of the source tree, or share/h1_training/config of an installed package."""
    override = os.environ.get("H1_TRAINING_CONFIG")
    if override:
        return Path(override)
    source = Path(__file__).resolve().parents[2] / "config"
    if (source / "bringup").is_dir():
        return source
    try:  # installed by colcon: share/h1_training/config
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("h1_training")) / "config"
    except Exception as exc:  # noqa: BLE001 - any failure means "not found"
        raise ProfileError(f"cannot find h1_training's config/ folder ({exc}); set H1_TRAINING_CONFIG") from exc


@dataclass(frozen=True)
class NodeSpec:
    name: str
    executable: str
    params: tuple[Path, ...] = ()
    args: tuple[str, ...] = ()
    ros: bool = True
    env: dict[str, str] = field(default_factory=dict)

    def argv_tail(self) -> list[str]:
        """Arguments after the executable: extra args, then ROS args (node name and parameter files)."""
        tail = list(self.args)
        if self.ros:
            tail += ["--ros-args", "-r", f"__node:={self.name}"]
            for path in self.params:
                tail += ["--params-file", str(path)]
        return tail


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    nodes: tuple[NodeSpec, ...]
    path: Path


def available_profiles(base: Path | None = None) -> list[str]:
    folder = (base or config_dir()) / "bringup"
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_profile(name: str, base: Path | None = None) -> Profile:
    base = base or config_dir()
    path = base / "bringup" / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available_profiles(base)) or "(none)"
        raise ProfileError(f"unknown bring-up profile {name!r}; available profiles: {names}")
    data = yaml.safe_load(path.read_text()) or {}
    nodes = []
    seen = set()
    for i, entry in enumerate(data.get("nodes") or []):
        if not isinstance(entry, dict) or "executable" not in entry:
            raise ProfileError(f"{path}: node #{i} needs at least 'executable'")
        node_name = str(entry.get("name", entry["executable"]))
        if node_name in seen:
            raise ProfileError(f"{path}: node name {node_name!r} appears twice")
        seen.add(node_name)
        params = tuple((base / p).resolve() for p in entry.get("params", []) or [])
        for p in params:
            if not p.is_file():
                raise ProfileError(f"{path}: node {node_name!r} names a missing parameter file {p}")
        nodes.append(
            NodeSpec(
                name=node_name,
                executable=str(entry["executable"]),
                params=params,
                args=tuple(str(a) for a in entry.get("args", []) or []),
                ros=bool(entry.get("ros", True)),
                env={str(k): str(v) for k, v in (entry.get("env") or {}).items()},
            )
        )
    if not nodes:
        raise ProfileError(f"{path}: profile has no nodes")
    return Profile(name=name, description=str(data.get("description", "")), nodes=tuple(nodes), path=path)
