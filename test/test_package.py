"""The package layout, its interfaces and its metadata agree with each other."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_py_value(name: str):
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise KeyError(name)


def test_versions_agree():
    pkg = ET.parse(ROOT / "package.xml").getroot()
    iface = ET.parse(ROOT / "msg_srv" / "package.xml").getroot()
    assert pkg.get("format") == "3" and iface.get("format") == "3"
    assert pkg.findtext("name") == "h1_training"
    assert iface.findtext("name") == "h1_training_interfaces"
    import h1_training

    assert setup_py_value("version") == pkg.findtext("version") == h1_training.__version__


def test_package_xml_declares_runtime_dependencies():
    deps = {e.text for e in ET.parse(ROOT / "package.xml").getroot() if e.tag.endswith("depend")}
    for needed in ("rclpy", "std_msgs", "std_srvs", "sensor_msgs", "diagnostic_msgs", "rcl_interfaces",
                   "h1_training_interfaces", "launch", "launch_ros"):
        assert needed in deps, needed


def test_every_node_entry_point_resolves_to_a_module_file():
    from h1_training.executables import NODES as nodes

    for exe, target in nodes.items():
        module = target.split(":")[0]
        path = ROOT / "src" / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{exe} -> {module}: {path} missing"


def test_interfaces_cmake_lists_every_file():
    cmake = (ROOT / "msg_srv" / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"((?:msg|srv)/\w+\.(?:msg|srv))"', cmake))
    on_disk = {f"{p.parent.name}/{p.name}" for p in (ROOT / "msg_srv").glob("*/*") if p.suffix in (".msg", ".srv")}
    assert listed == on_disk


def test_interfaces_import_and_carry_constants():
    from h1_training_interfaces.msg import RecorderStatus, SessionStatus, TrainingStats
    from h1_training_interfaces.srv import SetArmMode, StartDataCollection

    req = StartDataCollection.Request(mode="teleoperation", target_episodes=100)
    assert (req.mode, req.target_episodes) == ("teleoperation", 100)
    assert hasattr(StartDataCollection.Response(), "success") and hasattr(StartDataCollection.Response(), "message")
    assert SessionStatus.STATE_SYNCING == 7 and RecorderStatus.STATE_ERROR == 3
    assert SetArmMode.Request.MODE_ESTOP == 3
    stats = TrainingStats(epoch=3, step=10, loss=0.5, learning_rate=1e-4, eta_s=12.0)
    assert stats.learning_rate > 0


def test_the_acceptance_import_line_works():
    code = "import rclpy, h1_training, h1_training_interfaces.msg, h1_training_interfaces.srv"
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


def test_robot_side_modules_do_not_import_torch():
    # The robot laptop must not need torch: the node modules and drivers import without it.
    code = (
        "import sys, importlib\n"
        "for m in ['h1_training.cli', 'h1_training.bringup', 'h1_training.procs', 'h1_training.params',\n"
        "          'h1_training.recording.layout', 'h1_training.nodes.common',\n"
        "          'h1_training.nodes.training_workflow_manager_node', 'h1_training.nodes.dataset_manager_node']:\n"
        "    importlib.import_module(m)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_pure_modules_do_not_import_rclpy():
    offenders = []
    for path in (ROOT / "src" / "h1_training").rglob("*.py"):
        rel = path.relative_to(ROOT / "src" / "h1_training")
        if rel.parts[0] in ("nodes", "sim", "bench", "commands", "foxglove", "web") or rel.name == "launch_profile.py":
            continue
        if re.search(r"^\s*(import rclpy|from rclpy)", path.read_text(), re.M):
            offenders.append(str(rel))
    assert not offenders, f"pure modules import rclpy: {offenders}"
