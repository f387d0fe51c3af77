"""Bring-up profiles are the single source of truth: every executable and parameter file they name exists,
launch files name only profiles, and `h1-training up` fails clearly on a bad profile."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from h1_training.bringup import ProfileError, available_profiles, config_dir, load_profile
from h1_training.procs import executable_exists, resolve_executable

ROOT = Path(__file__).resolve().parents[1]


def test_sim_and_real_profiles_exist():
    assert {"sim", "real"} <= set(available_profiles())


@pytest.mark.parametrize("name", available_profiles())
def test_profile_names_existing_executables_and_parameter_files(name):
    profile = load_profile(name)
    for node in profile.nodes:
        assert executable_exists(node.executable), f"{name}: {node.executable} is not installed"
        for path in node.params:
            assert path.is_file()
            data = yaml.safe_load(path.read_text())
            # a parameter file that names this node must hold ros__parameters for it
            if node.name in data:
                assert "ros__parameters" in data[node.name], f"{path}: {node.name} lacks ros__parameters"


def test_real_profile_has_no_emulators_and_sim_has_no_robot_addresses():
    real = {n.executable for n in load_profile("real").nodes}
    assert not real & {"h1_sim", "inspire_sim", "camera_sim", "sim_operator"}
    for node in load_profile("sim").nodes:
        for path in node.params:
            assert "192.168." not in path.read_text(), f"{path} addresses the robot network"


def test_launch_files_reference_only_profiles():
    executables = {n.executable for p in available_profiles() for n in load_profile(p).nodes}
    launch_files = sorted((ROOT / "launch").glob("*.launch.py"))
    assert launch_files
    for path in launch_files:
        tree = ast.parse(path.read_text())
        names = {fn.name for fn in tree.body if isinstance(fn, ast.FunctionDef)}
        assert "generate_launch_description" in names, path
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        # executables come from the profile, never hard-coded in a launch file
        hard_coded = strings & (executables | {"h1-training"})
        assert not hard_coded, f"{path.name} hard-codes {hard_coded}"
        profiles = re.findall(r'generate_profile_launch_description\("(\w+)"\)', path.read_text())
        assert profiles and all(p in available_profiles() for p in profiles), path


def test_unknown_profile_names_the_available_ones(tmp_path):
    with pytest.raises(ProfileError, match="available profiles: .*real.*sim"):
        load_profile("nonexistent")
    out = subprocess.run(resolve_executable("h1-training") + ["up", "nonexistent"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "unknown bring-up profile 'nonexistent'" in out.stderr and "sim" in out.stderr


def test_profile_with_missing_parameter_file_is_rejected(tmp_path):
    (tmp_path / "bringup").mkdir()
    (tmp_path / "bringup" / "bad.yaml").write_text("nodes:\n  - {executable: h1_sim, params: [params/nope.yaml]}\n")
    with pytest.raises(ProfileError, match="missing parameter file"):
        load_profile("bad", base=tmp_path)


def test_node_ros_arguments():
    node = load_profile("sim").nodes[0]
    tail = node.argv_tail()
    assert tail[:3] == ["--ros-args", "-r", f"__node:={node.name}"]
    assert "--params-file" in tail and str(config_dir()) in tail[tail.index("--params-file") + 1]


def test_cli_help_and_unknown_command():
    exe = resolve_executable("h1-training")
    out = subprocess.run(exe + ["--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "up" in out.stdout and "bench" in out.stdout
    bad = subprocess.run(exe + ["frobnicate"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", available_profiles())
def test_profile_parameter_files_set_only_declared_parameters_with_valid_values(name):
    """A misspelt parameter or an out-of-range value in config/params/*.yaml is found here, not on the robot
    (where the node would refuse to start, or worse, ignore it)."""
    import runpy

    from h1_training.executables import NODES
    from h1_training.params import check_all, param_specs

    node_params = runpy.run_path(str(ROOT / "scripts" / "param_tables.py"))["node_params"]
    checked = 0
    for node in load_profile(name).nodes:
        cls = node_params(node.executable) if node.executable in NODES else None  # ROS nodes, not `h1-training`
        for path in node.params:
            values = (yaml.safe_load(path.read_text()) or {}).get(node.name, {}).get("ros__parameters", {})
            if cls is None or not values:
                continue
            problems = check_all(param_specs(cls), _flat(values))
            assert not problems, f"{path} for {node.name}: {problems}"
            checked += 1
    assert checked or name == "operator_view", f"profile {name}: no parameter file was checked"
