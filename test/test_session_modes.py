"""hil_session's collection modes without ROS: the state machine's kinesthetic and teleoperation episodes
(session/state_machine.py) and the teleoperation relay (session/teleop.py: the arm's safety clamp, the watchdog).
The same modes against the running stack: test_collection_modes.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_session_state_machine import PATH, SAVED, TO, World, acts

from h1_training.drivers.arm_safety import SafetyConfig
from h1_training.robot_model import ARM_HOME_RAD
from h1_training.session.state_machine import (
    ArmMode,
    Failed,
    Interrupt,
    Key,
    SaveRecording,
    SessionMachine,
    SetArmMode,
    StartPolicy,
    StartRecording,
    StartTeleop,
    State,
    StopPolicy,
    StopTeleop,
    is_gating,
)
from h1_training.session.teleop import MODEL_VERSION, TeleopRelay

HOLD, TRACK, DAMPING = (SetArmMode(m) for m in (ArmMode.HOLD, ArmMode.TRACK, ArmMode.DAMPING))


def at_ready(mode: str) -> World:
    w = World(SessionMachine(mode=mode))
    for ev in TO[State.READY]:
        w.feed(ev)
    return w


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown collection mode"):
        SessionMachine(mode="dance")


def test_kinesthetic_episode_is_damping_only_with_no_policy():
    w = at_ready("kinesthetic")
    out = w.feed(Key("y"))
    assert out.state == State.DAMPING
    assert acts(out.effects) == [DAMPING, StartRecording(1, -1, "")]  # damping before the first recorded frame
    assert not any(isinstance(e, StartPolicy) for e in w.effects)
    assert w.m.allowed_keys() == ("e",)
    out = w.feed(Key("e"))
    assert acts(out.effects) == [StopPolicy(), SaveRecording(-1), HOLD] and out.state == State.SAVING
    assert w.feed(SAVED).state == State.DECIDING and w.arm == ArmMode.HOLD


def test_kinesthetic_recorder_refusal_returns_the_arm_to_hold():
    w = at_ready("kinesthetic")
    w.feed(Key("y"), fail=(StartRecording(1, -1, ""), "recorder", "disk full"))
    assert w.m.state == State.READY and w.arm == ArmMode.HOLD and not w.recording


def test_teleoperation_episode_relays_then_saves_or_hands_over_to_damping():
    w = at_ready("teleoperation")
    out = w.feed(Key("y"))
    assert out.state == State.EXECUTING
    assert acts(out.effects) == [StartRecording(1, -1, ""), StartTeleop(), TRACK]
    assert is_gating(StartTeleop())  # no teleop relay: never TRACK
    assert set(w.m.allowed_keys()) == {"s", "e"}
    out = w.feed(Key("e"))
    assert acts(out.effects) == [StopPolicy(), StopTeleop(), SaveRecording(-1), HOLD]
    assert not w.m.teleop_running

    w = at_ready("teleoperation")
    w.feed(Key("y"))
    out = w.feed(Key("s"))  # the operator takes the arm: damping first, then the relay stops
    assert acts(out.effects) == [DAMPING, StopTeleop()] and out.state == State.LABELING


def test_teleoperation_failures_and_ctrl_c_stop_the_relay():
    w = at_ready("teleoperation")
    w.feed(Key("y"), fail=(StartTeleop(), "teleop", "no teleoperation target"))
    assert w.arm == ArmMode.HOLD and not w.m.teleop_running  # (its StopTeleop is a no-op: effects are idempotent)
    assert w.m.state == State.SAVING  # the recording that started is saved
    w = at_ready("teleoperation")
    w.feed(Key("y"))
    out = w.feed(Interrupt())
    assert StopTeleop() in out.effects and HOLD in out.effects and out.state == State.STOPPED
    w = at_ready("teleoperation")
    w.feed(Key("y"))
    out = w.feed(Failed("arm", "arm went to ESTOP"))
    assert StopTeleop() in out.effects and HOLD in out.effects


def test_mode_changes_apply_to_the_next_episode():
    w = at_ready("hil")
    w.m.mode = "teleoperation"
    out = w.feed(Key("y"))
    assert StartTeleop() in out.effects and w.m.episode_mode == "teleoperation"
    assert PATH  # the shared fixtures stay in use


class Relay:
    def __init__(self, timeout_s: float = 0.15) -> None:
        self.sent: list[tuple[np.ndarray, str]] = []
        self.events: list[str] = []
        self.changed = threading.Event()
        self.relay = TeleopRelay(self._publish, self._stale, self._fresh, rate_hz=100.0, timeout_s=timeout_s)

    def _publish(self, target: np.ndarray, version: str) -> None:
        self.sent.append((target.copy(), version))

    def _stale(self, reason: str) -> None:
        self.events.append("stale: " + reason)
        self.changed.set()

    def _fresh(self) -> None:
        self.events.append("fresh")
        self.changed.set()


def test_relay_clamps_with_the_arm_safety_layer_and_rejects_bad_targets():
    r = Relay()
    upper = SafetyConfig().safe_upper
    target = ARM_HOME_RAD.copy()
    target[0] = upper[0] + 2.0
    assert r.relay.offer(target) == ""
    assert "NaN" in r.relay.offer(np.full(14, np.nan))
    assert "expected 14" in r.relay.offer([0.0] * 3)
    assert r.relay.stats.clamped == 1 and r.relay.stats.rejected == 2
    r.relay.start(require_fresh_s=1.0)
    try:
        deadline = time.monotonic() + 5
        while len(r.sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        r.relay.stop()
    sent, version = r.sent[-1]
    assert version == MODEL_VERSION and sent[0] == pytest.approx(upper[0])
    assert np.allclose(sent[1:], target[1:])  # the rejected targets never replaced the good one


def test_relay_watchdog_goes_stale_then_fresh_again():
    r = Relay(timeout_s=0.15)
    r.relay.offer(ARM_HOME_RAD)
    r.relay.start(require_fresh_s=1.0)
    try:
        # started fresh (the session sets TRACK itself): the first event is the watchdog's
        assert r.changed.wait(5) and r.events[0].startswith("stale: no teleoperation target for")
        assert len(r.sent) >= 2  # relayed (at 100 Hz) while fresh
        n = len(r.sent)
        time.sleep(0.1)
        assert len(r.sent) == n  # nothing relayed while stale
        r.changed.clear()
        r.relay.offer(ARM_HOME_RAD)
        assert r.changed.wait(5) and r.events[-1] == "fresh"
    finally:
        r.relay.stop()
    assert r.relay.stats.stale_events == 1


def test_relay_refuses_to_start_without_a_fresh_target():
    r = Relay()
    with pytest.raises(TimeoutError, match="no teleoperation target"):
        r.relay.start(require_fresh_s=0.2)
    assert not r.relay.running
