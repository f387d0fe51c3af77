"""Test harness: every run gets its own ROS domain on loopback; node executables run as real processes
and are always cleaned up (their output is printed when a test fails)."""

from __future__ import annotations

import os
import sys

import pytest

# One ROS domain per test run (0-101 are safe for Fast DDS port math), loopback discovery only. Set at
# import time so that in-process rclpy (RosProbe) and every child process agree.
DOMAIN_ID = int(os.environ.get("H1_TEST_DOMAIN", str(10 + os.getpid() % 90)))
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def domain_id() -> int:
    return DOMAIN_ID


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def procs(request):
    """A ProcessGroup on loopback; children are stopped (and their logs shown on failure) at teardown."""
    from h1_training.procs import ProcessGroup, loopback_ros_env

    group = ProcessGroup(env=loopback_ros_env(DOMAIN_ID))
    yield group
    group.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for child in group.children:
            sys.stderr.write(f"\n----- output of {child.name} (exit {child.proc.returncode}) -----\n")
            sys.stderr.write(child.output()[-6000:] + "\n")


@pytest.fixture
def probe():
    """An in-process rclpy node for graph waits, captures, service calls and parameter sets."""
    from h1_training.nodes.probe import RosProbe

    p = RosProbe(f"test_probe_{os.getpid()}")
    yield p
    p.close()
