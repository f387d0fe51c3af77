"""The harness that keeps a green run honest: private ports per stack, ROS domains claimed by lock file, children
that exit unexpectedly detected, and benchmark targets that can fail."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from h1_training.bench.report import Target, evaluate, missed, peak_rss_mb
from h1_training.bringup import load_profile, plan_ports
from h1_training.procs import ProcessGroup, claim_ros_domain

ROOT = Path(__file__).resolve().parents[1]


# --- private ports ------------------------------------------------------------------------------------------------
def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_sim_stacks_get_disjoint_ports_and_each_stack_agrees_with_itself():
    profile = load_profile("sim_hil")
    a, b = plan_ports(profile, environ={}), plan_ports(profile, environ={})
    # every loopback endpoint of the files moved: Modbus 6001/6002, image servers 5555-5557, the policy server 8000
    assert set(a.mapping) == {5555, 5556, 5557, 6001, 6002, 8000}
    assert not set(a.mapping.values()) & set(b.mapping.values())
    assert not set(a.mapping.values()) & set(a.mapping)
    nodes = {n.name: n for n in profile.nodes}
    # both ends of each link moved to the same port
    emulator = a.argv_tail(nodes["inspire_sim"])
    driver = a.argv_tail(nodes["inspire_hand_node"])
    assert f"left_port:={a.mapping[6001]}" in emulator and f"left_port:={a.mapping[6001]}" in driver
    assert f"head_bind:=tcp://127.0.0.1:{a.mapping[5555]}" in a.argv_tail(nodes["camera_sim"])
    assert f"head_address:=tcp://127.0.0.1:{a.mapping[5555]}" in a.argv_tail(nodes["camera_node"])
    server = a.argv_tail(nodes["policy_server"])
    assert server[server.index("--port") + 1] == str(a.mapping[8000])
    assert f"policy_port:={a.mapping[8000]}" in a.argv_tail(nodes["hil_session"])


def test_ports_come_from_the_environment_when_pinned_and_robot_addresses_never_move():
    profile = load_profile("sim")
    plan = plan_ports(profile, environ={"H1_PORT_5555": "15555"})
    assert plan.mapping[5555] == 15555
    assert plan_ports(profile, environ={"H1_FIXED_PORTS": "1"}).mapping == {}
    assert plan_ports(load_profile("real"), environ={}).mapping == {}  # 192.168.x.x endpoints stay


# --- ROS domains --------------------------------------------------------------------------------------------------
def test_a_claimed_domain_is_not_claimed_again_until_its_holder_ends(tmp_path):
    mine = claim_ros_domain(20, 22, lock_dir=tmp_path)
    other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from h1_training.procs import claim_ros_domain
        ids = [claim_ros_domain(20, 22, lock_dir={str(tmp_path)!r}).domain_id for _ in range(2)]
        print(ids)
        try:
            claim_ros_domain(20, 22, lock_dir={str(tmp_path)!r})
        except RuntimeError as exc:
            print("full:", exc)
        """)], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    ids = json.loads(other.stdout.splitlines()[0])
    assert mine.domain_id not in ids and len(set(ids)) == 2
    assert "full:" in other.stdout  # three domains, three holders
    # the child ended: its two domains are free again, the one this process holds is not
    again = claim_ros_domain(20, 22, lock_dir=tmp_path)
    assert again.domain_id in ids
    mine.release()
    again.release()


# --- children that die --------------------------------------------------------------------------------------------
def test_unexpected_and_declared_exits_are_told_apart():
    group = ProcessGroup()
    try:
        crash = group.start("crash", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
        done = group.start("done", [sys.executable, "-c", "print('finished')"], expect_exit=True)
        killed = group.start("killed", [sys.executable, "-c", "import time; time.sleep(60)"])
        stopped = group.start("stopped", [sys.executable, "-c", "import time; time.sleep(60)"])
        alive = group.start("alive", [sys.executable, "-c", "import time; time.sleep(60)"])
        killed.signal(signal.SIGKILL)
        group.stop_one(stopped)
        for child in (crash, done, killed):
            child.proc.wait(timeout=30)
        assert [c.name for c in group.unexpected_exits()] == ["crash"]
        assert alive.running and crash.proc.returncode == 3
    finally:
        group.stop()
    assert [c.name for c in group.unexpected_exits()] == ["crash"]  # stopping the rest made their exits expected


def test_a_test_whose_child_dies_fails_with_the_childs_output(tmp_path):
    """The procs fixture, run by a nested pytest: the dying child fails the test, the declared one does not."""
    (tmp_path / "conftest.py").write_text((ROOT / "test" / "conftest.py").read_text())
    (tmp_path / "test_child.py").write_text(textwrap.dedent("""
        import sys, time

        def test_dies(procs):
            procs.start("dying", [sys.executable, "-c", "print('address already in use'); raise SystemExit(1)"])
            time.sleep(1.0)

        def test_declared(procs):
            child = procs.start("tool", [sys.executable, "-c", "print('done')"], expect_exit=True)
            child.proc.wait(timeout=30)
        """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    # test_dies errors at teardown (its call passed: pytest counts both), test_declared passes
    assert "2 passed, 1 error" in out.stdout and "failed" not in out.stdout, out.stdout + out.stderr
    assert "ERROR test_child.py::test_dies" in out.stdout
    assert "child exited unexpectedly during the test: dying (exit 1)" in out.stdout
    assert "address already in use" in out.stdout  # its output is shown


# --- benchmark targets --------------------------------------------------------------------------------------------
def test_targets_are_booleans_that_a_missing_or_bad_figure_misses():
    figures = {"mean_hz": np.float64(49.9), "missed_ticks": np.int64(0), "p99": None, "rss": {"node": 120.0}}
    targets = evaluate(figures, [Target("mean_hz", "within", 50.0, tol=0.25), Target("missed_ticks", "==", 0),
                                 Target("p99", "<=", 25.0), Target("rss.node", "<=", 100.0),
                                 Target("absent", ">=", 1.0)])
    assert all(type(v) is bool for v in targets.values())
    figures["targets"] = targets
    assert missed(figures) == ["p99 <= 25", "rss.node <= 100", "absent >= 1"]
    with pytest.raises(ValueError):
        Target("x", "~", 1.0)


def test_peak_rss_is_the_kernels_high_water_mark():
    import os

    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(200 * 2**20); del b; time.sleep(30)"])
    try:
        import time

        deadline = time.monotonic() + 30
        while (peak_rss_mb(child.pid) or 0) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert peak_rss_mb(child.pid) >= 200  # the 200 MB were freed; the peak stays
        assert peak_rss_mb(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()


def test_bench_command_exits_1_on_a_missed_target_and_0_with_no_fail(tmp_path, monkeypatch):
    import argparse

    from h1_training.commands import bench

    def fake(args):
        return {"x": 1.0, "targets": evaluate({"x": 1.0}, [Target("x", ">=", 2.0)])}

    args = argparse.Namespace(bench="fake", _bench=fake, json=True, no_fail=False)
    assert bench.run(args) == 1
    args.no_fail = True
    assert bench.run(args) == 0


def test_readme_table_is_generated_from_bench_json(tmp_path):
    results = {"recorder": {"mean_hz": 49.98, "targets": {"mean_hz within 50 +- 0.25": True, "save_s <= 0.5": False},
                            "save_s": 0.7, "inputs": {"jpeg_kb": 50.1},
                            "machine": {"cpus": 2, "cpu_model": "cpu", "loadavg": [3.5, 1, 1]},
                            "date": "2026-12-05T13:00:00+0000"}}
    (tmp_path / "bench.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text("head\n<!-- bench-table:start -->\nold\n<!-- bench-table:end -->\ntail\n")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_table.py"), str(tmp_path / "bench.json"),
                          "--readme", str(readme)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = readme.read_text()
    assert "old" not in text and text.startswith("head\n") and text.endswith("tail\n")
    assert "| `mean_hz` | 49.98 | within 50 +- 0.25 | yes |" in text
    assert "| `save_s` | 0.7 | <= 0.5 | **no** |" in text
    assert "2026-12-05 13:00" in text and "when each bench ended: recorder 3.5" in text


def test_readme_table_merges_one_file_per_bench(tmp_path):
    machine = {"cpus": 2, "cpu_model": "cpu", "loadavg": [1.5, 1, 1]}
    (tmp_path / "all.json").write_text(json.dumps({"web": {"load_s": 0.5, "machine": machine, "targets": {}},
                                                   "ab": {"power": 0.1, "machine": machine, "targets": {}}}))
    (tmp_path / "ab.json").write_text(json.dumps({"power": 0.85, "machine": machine,
                                                  "targets": {"power >= 0.8": True}}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_table.py"), str(tmp_path / "all.json"),
                          str(tmp_path / "ab.json")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "| `ab` | `power` | 0.85 | >= 0.8 | yes |" in out.stdout and "web 1.5" in out.stdout  # the later file wins


def test_readme_table_is_the_one_generated_from_docs_bench():
    """The README's figures are the committed bench outputs' (docs/bench/*.json), never typed by hand."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "scripts" / "bench_table.py")
    bench_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_table)
    results: dict = {}
    for path in sorted((ROOT / "docs" / "bench").glob("*.json")):
        results.update(bench_table.load(path))
    readme = (ROOT / "README.md").read_text()
    inside = readme.split(bench_table.START, 1)[1].split(bench_table.END, 1)[0]
    assert inside.strip() == bench_table.render(results).strip(), (
        "README's benchmark table is stale: run `python scripts/bench_table.py docs/bench/*.json --readme README.md`")


def test_the_noop_wire_baseline_answers_without_looking_and_is_never_deployable(tmp_path):
    from h1_training.serve.model_pool import ModelPool

    pool = ModelPool(tmp_path)
    out = pool.get("noop").infer({"not": "an observation"})
    assert out["actions"].shape == (50, 14) and not out["actions"].any()
    with pytest.raises(ValueError, match="wire baseline"):
        pool.swap_default("noop")
    assert pool.default_id == "scripted" and pool.epoch == 0
    with pytest.raises(ValueError, match="wire baseline"):
        ModelPool(tmp_path, default_model="noop")
