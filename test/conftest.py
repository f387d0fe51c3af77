"""Test harness: every run claims its own ROS domain on loopback; node executables run as real processes and are
always cleaned up, and a child that exits while a test runs fails that test with its output shown.

A test that expects a child to end declares it: ``procs.start(..., expect_exit=True)`` /
``procs.start_executable(..., expect_exit=True)`` for a process that finishes by itself (a scripted operator, a
one-shot tool), ``child.signal(sig)`` to kill or interrupt it on purpose, ``procs.stop_one(child)`` to stop it.
Any other exit fails the test at teardown ("child exited unexpectedly"), with the child's output.
"""

from __future__ import annotations

import os
import sys

import pytest

from h1_training.procs import claim_ros_domain

# One ROS domain per test run, claimed with a lock file (held until this process ends, so parallel runs, benches
# and demos never share one), loopback discovery only. Set at import time so that in-process rclpy (RosProbe) and
# every child process agree. H1_TEST_DOMAIN forces one (then nothing is claimed).
if os.environ.get("H1_TEST_DOMAIN"):
    DOMAIN_ID = int(os.environ["H1_TEST_DOMAIN"])
else:
    DOMAIN_ID = claim_ros_domain().domain_id
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


def _show(children) -> str:
    return "".join(f"\n----- output of {c.name} (exit {c.proc.returncode}) -----\n{c.output()[-6000:]}\n"
                   for c in children)


@pytest.fixture
def procs(request):
    """A ProcessGroup on loopback; children are stopped at teardown. A child that exited during the test without
    being declared (``expect_exit``, ``signal``, ``stop_one``) fails the test with its output."""
    from h1_training.procs import ProcessGroup, loopback_ros_env

    group = ProcessGroup(env=loopback_ros_env(DOMAIN_ID))
    yield group
    report = group.unexpected_exit_report()  # before stop(): stopping makes every exit expected
    group.stop(concurrently=True)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write(_show(group.children))
    elif report:
        pytest.fail(report, pytrace=False)


@pytest.fixture
def probe():
    """An in-process rclpy node for graph waits, captures, service calls and parameter sets."""
    from h1_training.nodes.probe import RosProbe

    p = RosProbe(f"test_probe_{os.getpid()}")
    yield p
    p.close()
