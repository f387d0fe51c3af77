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
import re
import socket
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
    # false for a robot's profile: every address in its files is the operator's (the robot, the GPU server, maybe
    # through an ssh tunnel on 127.0.0.1) and must never move; true where all endpoints are our own emulators
    private_ports: bool = True


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
    private = data.get("private_ports", True)
    if not isinstance(private, bool):
        raise ProfileError(f"{path}: private_ports must be true or false, got {private!r}")
    return Profile(name=name, description=str(data.get("description", "")), nodes=tuple(nodes), path=path,
                   private_ports=private)


# --- private ports ------------------------------------------------------------------------------------------------
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_TCP_LOOPBACK = re.compile(r"(tcp|http|ws)://(127\.0\.0\.1|localhost):(\d+)/?")
FIXED_PORTS_ENV = "H1_FIXED_PORTS"   # "1": keep the parameter files' ports (one stack per machine)
PORT_ENV_PREFIX = "H1_PORT_"         # H1_PORT_5555=15555: this port instead of a free one


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class PortPlan:
    """The loopback ports of a profile moved to private ones, consistently across the nodes that share them.

    ``mapping``: parameter-file port -> port this stack uses. ``argv_tail(node)`` is ``node.argv_tail()`` with the
    moves applied: ``-p key:=new`` after the parameter files for ROS nodes, ``--port N`` rewritten in the extra
    arguments of non-ROS processes (the policy server).
    """

    mapping: dict[int, int] = field(default_factory=dict)
    params: dict[str, list[str]] = field(default_factory=dict)

    def port(self, profile_port: int) -> int:
        return self.mapping.get(profile_port, profile_port)

    def moved_args(self, node: NodeSpec) -> list[str]:
        """The node's extra arguments with ``--port N`` moved."""
        args = list(node.args)
        for i in range(len(args) - 1):
            if args[i] == "--port" and args[i + 1].isdigit():
                args[i + 1] = str(self.port(int(args[i + 1])))
        return args

    def argv_tail(self, node: NodeSpec) -> list[str]:
        args = self.moved_args(node)
        tail = NodeSpec(node.name, node.executable, node.params, tuple(args), node.ros, node.env).argv_tail()
        for assignment in self.params.get(node.name, []):
            tail += ["-p", assignment]
        return tail


def _loopback_ports(section: dict) -> list[tuple[str, int, str]]:
    """(key, port, how) for the loopback ports of one node's parameters: ``*_port`` integers whose host
    (``host`` or ``<prefix>_host``) is loopback, and ``tcp://``, ``http://`` or ``ws://127.0.0.1:N``
    addresses (e.g. the workflow manager's ``server.url``)."""
    found = []
    for key, value in section.items():
        if key.endswith("_port") and isinstance(value, int) and not isinstance(value, bool):
            prefix = key[: -len("_port")]
            host = section.get(f"{prefix}_host", section.get("host"))
            if host in LOOPBACK_HOSTS:
                found.append((key, value, "int"))
        elif isinstance(value, str) and (m := _TCP_LOOPBACK.fullmatch(value)):
            found.append((key, int(m.group(3)), f"{m.group(1)}://{m.group(2)}:"))
    return found


def plan_ports(profile: Profile, environ: dict[str, str] | None = None) -> PortPlan:
    """Private loopback ports for one stack of ``profile``, so that two stacks (tests, benches, the demo,
    `h1-training up sim`) run side by side on one machine. Only loopback endpoints move, and only in profiles that
    do not say ``private_ports: false`` (the real robot's: its addresses, loopback ones included, never move);
    ``H1_PORT_<N>=<M>`` in the environment pins profile port N to M, ``H1_FIXED_PORTS=1`` keeps the files' ports
    (an external tool expects them)."""
    env = os.environ if environ is None else environ
    plan = PortPlan()
    if not profile.private_ports or env.get(FIXED_PORTS_ENV, "") not in ("", "0"):
        return plan

    def new_port(old: int) -> int:
        if old not in plan.mapping:
            pinned = env.get(f"{PORT_ENV_PREFIX}{old}")
            plan.mapping[old] = int(pinned) if pinned else free_port()
        return plan.mapping[old]

    for node in profile.nodes:
        for path in node.params if node.ros else ():
            data = yaml.safe_load(path.read_text()) or {}
            section = (data.get(node.name) or {}).get("ros__parameters") or {}
            for key, old, how in _loopback_ports(section):
                value = str(new_port(old)) if how == "int" else f"{how}{new_port(old)}"
                plan.params.setdefault(node.name, []).append(f"{key}:={value}")
    # non-ROS processes of the profile (the policy server) listen on --port: move it only when a ROS node of the
    # profile talks to that port on loopback (then both sides move together)
    for node in profile.nodes:
        if not node.ros:
            for i in range(len(node.args) - 1):
                if node.args[i] == "--port" and node.args[i + 1].isdigit() and int(node.args[i + 1]) in plan.mapping:
                    new_port(int(node.args[i + 1]))
    return plan


def loopback_only(profile: Profile) -> bool:
    """True for every profile but the robot's: its processes discover each other on loopback only
    (``procs.loopback_ros_env``); the real profile keeps the operator's ROS network settings."""
    return profile.name != "real"


@dataclass(frozen=True)
class LaunchEntry:
    """One process of a profile as ``ros2 launch`` starts it (``launch_profile`` turns it into a ``launch_ros``
    ``Node`` or a ``launch`` ``ExecuteProcess``): the same executable, node name, parameter files and port moves as
    ``h1-training up``, written as the launch API takes them (parameter overrides typed, as ``-p`` parses them)."""

    name: str
    executable: str
    ros: bool
    arguments: tuple[str, ...]
    param_files: tuple[str, ...]
    overrides: dict[str, object]
    env: dict[str, str]

    def argv_tail(self) -> list[str]:
        """The arguments after the executable, in ``up``'s form (``NodeSpec.argv_tail`` + ``-p`` moves)."""
        tail = list(self.arguments)
        if self.ros:
            tail += ["--ros-args", "-r", f"__node:={self.name}"]
            for path in self.param_files:
                tail += ["--params-file", path]
            for key, value in self.overrides.items():
                tail += ["-p", f"{key}:={value}"]
        return tail


def launch_entries(profile: Profile, ports: PortPlan | None = None) -> list[LaunchEntry]:
    """The processes of ``profile`` for a launch description, on the ports of ``ports`` (``plan_ports`` unless
    given): what ``up`` runs, node for node."""
    plan = plan_ports(profile) if ports is None else ports
    entries = []
    for node in profile.nodes:
        args = plan.moved_args(node)
        overrides: dict[str, object] = {}
        for assignment in plan.params.get(node.name, []):
            key, _, value = assignment.partition(":=")
            overrides[key] = yaml.safe_load(value)  # typed as `-p key:=value` types it (YAML)
        entries.append(LaunchEntry(node.name, node.executable, node.ros, tuple(args),
                                   tuple(str(p) for p in node.params), overrides, dict(node.env)))
    return entries


def start_profile(group, profile: Profile, extra: dict[str, list[str]] | None = None,
                  skip: tuple[str, ...] = (), ports: PortPlan | None = None) -> PortPlan:
    """Start the processes of ``profile`` in a ``procs.ProcessGroup`` on private loopback ports (``plan_ports``
    unless ``ports`` is given); ``extra`` appends arguments per node name (e.g. ``-p save_dir:=...``), ``skip``
    leaves nodes out. Returns the port plan (which port each endpoint got)."""
    plan = plan_ports(profile) if ports is None else ports
    for node in profile.nodes:
        if node.name in skip:
            continue
        tail = plan.argv_tail(node) + list((extra or {}).get(node.name, []))
        group.start_executable(node.name, node.executable, tail, extra_env=node.env or None)
    return plan
