"""The launch files start what `h1-training up` starts: each launch/*.launch.py is imported and its
generate_launch_description() built, its profile's actions generated, and every Node / ExecuteProcess compared with
the profile's processes as `up` runs them (executable, node name, parameter files, port moves, extra arguments,
environment).

ROS 2 Kilted's ``launch``/``launch_ros`` are not on PyPI (no wheel for this venv) and ``ros2 launch`` is not here, so
the two launch modules are replaced, for this test only, by recorders of the keyword arguments each action is built
with -- the launch API's documented constructor arguments, which is all ``ros2 launch`` reads from our files. The
code under test (the launch files and ``h1_training.launch_profile``) runs unmodified."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from h1_training.bringup import available_profiles, load_profile, loopback_only, plan_ports

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


class _Action:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Action):
    def perform(self, context) -> str:
        return context[self.args[0]]


def _fake_launch_modules(monkeypatch) -> None:
    made = {}
    for name in ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions"):
        made[name] = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, made[name])
    made["launch"].LaunchDescription = type("LaunchDescription", (_Action,), {})
    for cls in ("DeclareLaunchArgument", "OpaqueFunction", "ExecuteProcess", "LogInfo", "SetEnvironmentVariable"):
        setattr(made["launch.actions"], cls, type(cls, (_Action,), {}))
    made["launch.substitutions"].LaunchConfiguration = _LaunchConfiguration
    made["launch_ros.actions"].Node = type("Node", (_Action,), {})


def _build(path: Path, profile: str | None) -> tuple[str, list]:
    """(the launch file's default profile, the actions its description yields for ``profile`` or the default)."""
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [a for a in description.args[0] if type(a).__name__ == "DeclareLaunchArgument"]
    assert [a.args[0] for a in declared] == ["profile"]
    default = declared[0].kwargs["default_value"]
    opaque = [a for a in description.args[0] if type(a).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    return default, opaque[0].kwargs["function"]({"profile": profile or default})


def _as_up_argv(action) -> tuple[str, str, list[str]]:
    """(name, executable, argument tail) of a launch action, in the form `up` passes them."""
    kw = action.kwargs
    if type(action).__name__ == "Node":
        assert kw["package"] == "h1_training"
        tail = list(kw["arguments"]) + ["--ros-args", "-r", f"__node:={kw['name']}"]
        for p in kw["parameters"]:
            if isinstance(p, dict):
                tail += [arg for key, value in p.items() for arg in ("-p", f"{key}:={value}")]
            else:
                tail += ["--params-file", p]
        return kw["name"], kw["executable"], tail
    cmd = kw["cmd"]
    return kw["name"], cmd[0], list(cmd[1:])


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=[p.name for p in LAUNCH_FILES])
@pytest.mark.parametrize("profile_name", available_profiles())
def test_launch_file_starts_what_up_starts(monkeypatch, path, profile_name):
    _fake_launch_modules(monkeypatch)
    profile = load_profile(profile_name)
    # pin this stack's private ports so that the launch file's plan and up's plan are the same draw
    for old, new in plan_ports(profile).mapping.items():
        monkeypatch.setenv(f"H1_PORT_{old}", str(new))
    ports = plan_ports(profile)
    _, actions = _build(path, profile_name)

    kinds = [type(a).__name__ for a in actions]
    processes = [a for a in actions if type(a).__name__ in ("Node", "ExecuteProcess")]
    up = [(n.name, n.executable, ports.argv_tail(n)) for n in profile.nodes]  # what commands/up.py runs
    assert [_as_up_argv(a) for a in processes] == up
    for action, node in zip(processes, profile.nodes, strict=True):
        assert type(action).__name__ == ("Node" if node.ros else "ExecuteProcess"), node.name
        assert action.kwargs["additional_env"] == node.env
    # discovery on loopback exactly where `up` sets it (every profile but the robot's)
    loopback = [a.args for a in actions if type(a).__name__ == "SetEnvironmentVariable"]
    assert loopback == ([("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")] if loopback_only(profile) else [])
    assert kinds.count("LogInfo") == (1 if ports.mapping else 0)
    if profile.private_ports:  # the sim profiles move their loopback ports, typed as `-p` would type them
        overrides = [p for a in processes if type(a).__name__ == "Node" for p in a.kwargs["parameters"]
                     if isinstance(p, dict)]
        assert overrides and all(isinstance(v, int) or "://" in v for o in overrides for v in o.values())
    else:
        assert not ports.mapping


def test_each_launch_file_defaults_to_an_existing_profile(monkeypatch):
    _fake_launch_modules(monkeypatch)
    defaults = {path.name: _build(path, None)[0] for path in LAUNCH_FILES}
    assert defaults == {"bringup.launch.py": "sim", "h1_hil.launch.py": "real"}
    assert set(defaults.values()) <= set(available_profiles())
