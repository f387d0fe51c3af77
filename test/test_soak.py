"""A short soak in the suite, on `h1-training bench soak`'s own pieces (bench/stack.FullStack, bench/soak's fault
injection, recovery check and episode figures): the whole simulated session stack (emulators, drivers, recorder,
hil_session with `h1-training serve`, workflow and dataset managers, gateway, web app, an rsync daemon as the GPU
side, the scripted operator) runs HIL episodes; the policy server is killed (SIGKILL) and started again; the stack
is whole again (every child running, recorder inputs fresh, a new episode saved, the server answering), no child
exited unexpectedly and every episode meets the HDF5 contract. The hour-long run is the bench."""

from __future__ import annotations

import pytest

from h1_training.bench.soak import Recovery, Usage, episode_figures, inject_and_recover
from h1_training.bench.stack import FullStack, wait_for
from h1_training.nodes.common import LATCHED_QOS

pytestmark = pytest.mark.timeout(420)


def test_a_killed_policy_server_is_recovered_and_every_episode_is_valid(probe, domain_id, tmp_path):
    rec_status = probe.capture("h1_training_interfaces/msg/RecorderStatus", "/episode_recorder/status",
                               LATCHED_QOS, keep=50)
    stack = FullStack(tmp_path / "run", domain_id)
    try:
        stack.start()
        stack.start_operator(epochs=1000, episodes=1, policy_s=2.0, human_s=1.0)
        assert wait_for(lambda: stack.episodes(), 180, "the first episode"), stack.group.unexpected_exit_report()
        fault = inject_and_recover(stack, Recovery(stack, rec_status), "policy_server", down_s=3.0, at_s=0.0,
                                   recover_s=150.0)
        report = stack.group.unexpected_exit_report()
    finally:
        stack.stop()
    assert not report, report
    assert fault.recovered, fault.note
    figures = episode_figures(stack.episodes(), sorted(stack.dirs.robot.rglob("*.partial")))
    assert figures["episodes"] >= 2, figures  # one before the fault, at least one after it
    assert figures["invalid_episodes"] == 0, figures["episode_problems"]


def test_growth_tells_a_swing_from_a_level_from_a_steady_leak():
    """Samples every 5 s for an hour: a process whose RSS swings by 40 MB within each 10 s episode does not grow; one
    that rises 60 MB in 10 min and stays grows 60 MB, none of it in the second half; a steady leak grows all along."""
    swing, level, leak = Usage(pid=1, started=0.0), Usage(pid=2, started=0.0), Usage(pid=3, started=0.0)
    for k in range(721):
        t = k * 5.0
        swing.history.append((t, 180.0 + (40.0 if k % 2 else 0.0)))     # trough and peak, sample by sample
        level.history.append((t, 100.0 + min(t / 60.0, 10.0) * 6.0))   # +60 MB in 10 min, then flat
        leak.history.append((t, 100.0 + t / 60.0))                       # +1 MB every minute
    assert abs(swing.growth_mb()) <= 1.0 and abs(swing.second_half_growth_mb()) <= 1.0
    assert 50.0 <= level.growth_mb() <= 60.0 and level.second_half_growth_mb() == 0.0
    assert 55.0 <= leak.growth_mb() <= 60.0 and 27.0 <= leak.second_half_growth_mb() <= 30.0
    assert Usage(pid=4, started=0.0).growth_mb() is None
    assert Usage(pid=4, started=0.0).second_half_growth_mb() is None
