"""hil_session's state machine (session/state_machine.py): the seed's flow, keys, Ctrl+C and failures."""

from __future__ import annotations

import pytest

from h1_training.session.state_machine import (
    LABEL_FAILED,
    LABEL_SUCCESS,
    LABEL_UNKNOWN,
    ArmMode,
    Effect,
    Exit,
    Failed,
    Interrupt,
    Key,
    Label,
    ProposeOnly,
    Saved,
    SaveRecording,
    Say,
    SessionMachine,
    SetArmMode,
    Source,
    Started,
    StartPolicy,
    StartRecording,
    State,
    StopPolicy,
    Sync,
    Synced,
    TrainingStatus,
    is_gating,
)

PATH = "./examples/h1_control_client/h1_data_auto/training_session_epoch1/episode_0.hdf5"
SAVED = Saved(PATH, 2847, 1200, 1647, 0)
HOLD, TRACK, DAMPING = (SetArmMode(m) for m in (ArmMode.HOLD, ArmMode.TRACK, ArmMode.DAMPING))


class World:
    """Executes effects the way the node must (module docstring): in order, a failing gating effect skips the
    rest of its list, failures are fed back after the list. Tracks what the robot side would be doing."""

    def __init__(self, machine: SessionMachine) -> None:
        self.m = machine
        self.arm, self.recording, self.policy, self.exited = ArmMode.HOLD, False, False, False
        self.lines: list[str] = []
        self.effects: list[Effect] = []
        self.feed(None)

    def feed(self, ev, fail: tuple[Effect, Source, str] | None = None):
        out = self.m.start() if ev is None else self.m.event(ev)
        assert out.accepted, out.reason
        failures = []
        for eff in out.effects:
            if fail is not None and eff == fail[0]:
                failures.append(Failed(fail[1], fail[2], eff))
                self.recording &= not isinstance(eff, SaveRecording)  # a failed save ends the episode too
                if is_gating(eff):
                    break
                continue
            self.effects.append(eff)
            if isinstance(eff, Say):
                self.lines.append(eff.text)
            elif isinstance(eff, SetArmMode):
                self.arm = eff.mode
            elif isinstance(eff, (StartPolicy, StopPolicy)):
                self.policy = isinstance(eff, StartPolicy)
            elif isinstance(eff, (StartRecording, SaveRecording)):
                self.recording = isinstance(eff, StartRecording)
            elif isinstance(eff, Exit):
                self.exited = True
        for f in failures:
            self.feed(f)
        return out


def run(events, **kw) -> World:
    w = World(SessionMachine(**kw))
    for ev in events:
        w.feed(ev)
    return w


def acts(effects) -> list[Effect]:
    return [e for e in effects if not isinstance(e, Say)]


# How to reach each state (after start()).
TO: dict[State, list] = {State.WAITING: [], State.READY: [TrainingStatus(True, 1)]}
TO[State.EXECUTING] = TO[State.READY] + [Key("y"), Started(0, PATH)]
TO[State.LABELING] = TO[State.EXECUTING] + [Key("s")]
TO[State.DAMPING] = TO[State.LABELING] + [Key("y")]
TO[State.SAVING] = TO[State.DAMPING] + [Key("e")]
TO[State.DECIDING] = TO[State.SAVING] + [SAVED]
TO[State.SYNCING] = TO[State.DECIDING] + [Key("n")]

ALLOWED = {State.WAITING: "", State.READY: "yn", State.EXECUTING: "s", State.LABELING: "yn", State.DAMPING: "e",
           State.SAVING: "", State.DECIDING: "yn", State.SYNCING: ""}


def test_seed_typical_flow_line_for_line():
    w = run(TO[State.EXECUTING] + [Key("s"), Key("e"), SAVED, Key("n"), Synced(2, 3_000_000, 1.5)], ask_label=False)
    assert w.lines == [
        "[WAITING] Polling policy server for new weights...",
        "[READY] New weights available!",
        "  Press 'y' to start epoch 1, 'n' to skip:",
        "[EXECUTING] Running policy (epoch 1)",
        "  Press 's' to stop execution and enter damping mode",
        "[DAMPING] Robot in damping mode - adjust pose freely",
        "  Press 'e' to end epoch and save",
        "[SAVING] Saving episode data...",
        f"  Saved: {PATH}",
        "  Total timesteps: 2847",
        "  Policy frames: 1200, Human frames: 1647",
        "[DECIDING] What's next?",
        "  Press 'y' to start another epoch",
        "  Press 'n' to finish training session",
        "[SYNCING] Uploading data to remote server...",
        "  Synced epoch 1: 2 file(s), 3.0 MB in 1.5 s",
        "[WAITING] Polling policy server for new weights...",
    ]
    # saved while still in damping, then HOLD: no frame after the correction is recorded as a model-less "policy" frame
    assert acts(w.effects) == [HOLD, StartRecording(1), StartPolicy(1), TRACK, DAMPING, ProposeOnly(),
                               StopPolicy(), SaveRecording(LABEL_UNKNOWN), HOLD, Sync(1)]
    assert w.m.state == State.WAITING and w.arm == ArmMode.HOLD and not w.policy and not w.recording


def test_a_new_episode_starts_its_frame_counts_at_zero():
    """Until the recorder's live counts arrive, the status shows this episode's (0), never the last episode's
    (a client waiting for ``policy_frames >= 40`` acted on the saved episode's count and stopped at once)."""
    w = run(TO[State.DECIDING] + [Key("y")])
    assert (w.m.status().policy_frames, w.m.status().human_frames) == (1200, 1647)
    w.feed(Key("y"))
    st = w.m.status()
    assert st.state_name == "EXECUTING" and (st.policy_frames, st.human_frames) == (0, 0)


def test_labeled_episodes_decide_again_then_next_epoch():
    again = [Key("y"), Started(1), Key("s"), Label(LABEL_FAILED), Key("e"), Saved("ep1", 10, 4, 6, 1)]
    w = run(TO[State.DECIDING] + [Key("y")])
    assert w.m.state == State.READY and w.lines[-1] == "  Press 'y' to start epoch 1, 'n' to finish and sync:"
    for ev in again + [Key("n")]:
        w.feed(ev)
    assert [e for e in w.effects if isinstance(e, (SaveRecording, Sync))] == [
        SaveRecording(LABEL_SUCCESS), SaveRecording(LABEL_FAILED), Sync(1)]
    st = w.m.status()
    assert (st.state_name, st.episode_index, st.episodes_saved, st.episodes_total, st.allowed_keys) == \
           ("SYNCING", 1, 2, 2, ())
    w.feed(Synced())
    for ready, epoch in ((True, 1), (False, 2)):      # same epoch again, or not ready: keep waiting
        w.feed(TrainingStatus(ready, epoch))
        assert w.m.state == State.WAITING
    w.feed(TrainingStatus(True, 2))
    st = w.m.status()
    assert (st.state, st.epoch, st.episodes_saved, st.allowed_keys, st.prompt) == \
           (State.READY, 2, 0, ("y", "n"), "y: start epoch 2, n: skip")
    w.feed(Key("n"))                                  # skip: nothing recorded, nothing to sync
    assert w.m.state == State.WAITING and w.effects[-1] == Say("[WAITING] Polling policy server for new weights...")


@pytest.mark.parametrize("state", list(ALLOWED))
def test_keys_outside_the_table_are_rejected_with_a_reason(state):
    w = run(TO[state])
    assert w.m.state == state and "".join(w.m.allowed_keys()) == ALLOWED[state]
    for key in "ynsex":
        if key in ALLOWED[state]:
            continue
        out = w.m.event(Key(key))
        assert (out.accepted, out.effects, out.state) == (False, (), state)
        assert (f"'{key}' does nothing in {state.name}" if key != "x" else "unknown key") in out.reason


@pytest.mark.parametrize("state", list(ALLOWED) + ["SYNC_FAILED"])
def test_ctrl_c_from_every_state_saves_and_leaves_the_arm_safe(state):
    w = run(TO[State.SYNCING] + [Failed("sync", "down")] if state == "SYNC_FAILED" else TO[state])
    was_recording = w.recording
    out = w.feed(Interrupt())
    assert out.state == State.STOPPED and w.exited and w.arm != ArmMode.TRACK
    assert not w.recording and not w.policy
    assert (SaveRecording(LABEL_SUCCESS if state == State.DAMPING else LABEL_UNKNOWN) in out.effects) == was_recording
    assert not w.m.event(Interrupt()).accepted and not w.m.event(Key("y")).accepted
    if state == State.SAVING:                          # the save in flight is still reported
        w.feed(SAVED)
        assert w.lines[-1] == "  Policy frames: 1200, Human frames: 1647"


H, D = ArmMode.HOLD, ArmMode.DAMPING
FAILURES = [  # state, failure (an event, or (effect, source, error) failing in the key's effects), -> state, arm
    (State.READY, (StartRecording(1), "recorder", "disk almost full"), State.READY, H),
    (State.READY, (TRACK, "arm", "TRACK refused before a valid state"), State.SAVING, H),
    (State.READY, (StartPolicy(1), "policy", "server unavailable"), State.SAVING, H),
    (State.EXECUTING, Failed("policy", "connection lost"), State.SAVING, H),
    (State.EXECUTING, Failed("arm", "arm mode ESTOP"), State.SAVING, H),
    (State.EXECUTING, (DAMPING, "arm", "refused"), State.SAVING, H),
    (State.DAMPING, Failed("recorder", "disk full"), State.SAVING, H),
    (State.DAMPING, (HOLD, "arm", "ESTOP latched"), State.SAVING, D),   # the arm refused HOLD: still saved
    (State.DAMPING, (SaveRecording(LABEL_SUCCESS), "recorder", "write error"), State.DECIDING, H),
    (State.DECIDING, Failed("arm", "FAULT: lowstate silent"), State.DECIDING, H),
    (State.DECIDING, (Sync(1), "sync", "connection refused"), State.SYNCING, H),
    (State.WAITING, Failed("poll", "connection refused"), State.WAITING, H),
]


@pytest.mark.parametrize("state,failure,after,arm", FAILURES)
def test_failures_lead_to_a_safe_state_with_the_data_kept(state, failure, after, arm):
    w = run(TO[state])
    key = {State.READY: "y", State.EXECUTING: "s", State.DAMPING: "e", State.DECIDING: "n"}.get(state)
    n_saves = sum(isinstance(e, SaveRecording) for e in w.effects)
    if isinstance(failure, Failed):
        w.feed(failure)
    else:
        w.feed(Key(key), fail=failure)
    assert (w.m.state, w.arm, w.policy, w.recording) == (after, arm, False, False) and w.m.last_error
    if after == State.SAVING:                          # episode aborted: the recording was saved
        assert sum(isinstance(e, SaveRecording) for e in w.effects) == n_saves + 1
        w.feed(SAVED)
        assert w.m.state == State.DECIDING
    if isinstance(failure, tuple) and isinstance(failure[0], StartRecording):
        assert "  Recorder refused to start: disk almost full" in w.lines  # and nothing moved (arm HOLD)
    if after == State.SYNCING:
        assert w.m.allowed_keys() == ("y", "n")
        w.feed(Key("y"))
        assert w.effects[-1] == Sync(1)
        w.feed(Failed("sync", "again"))
        w.feed(Key("n"))
        assert w.m.state == State.WAITING and not w.m.event(Synced()).accepted


def test_poll_failure_said_once_and_recovery_said():
    w = run([Failed("poll", "refused"), Failed("poll", "refused"), TrainingStatus(False, 0)])
    assert w.lines[1:] == ["  Failed to poll training status: refused", "  Policy server reachable again"]
    assert w.m.state == State.WAITING and w.m.status().server_epoch == 0


def test_labels_results_and_ctrl_c_spellings():
    w = run(TO[State.DAMPING])
    assert not w.m.event(Label(5)).accepted and not w.m.event(Saved("x", 1, 1, 0)).accepted
    w.feed(Label(LABEL_FAILED))                        # the operator changes their mind before 'e'
    assert w.m.status().label == LABEL_FAILED and w.m.state == State.DAMPING
    w.feed(Key(" E "))                                 # keys are trimmed and case-insensitive
    assert SaveRecording(LABEL_FAILED) in w.effects
    assert run([]).feed(Key("ctrl+c")).state == State.STOPPED
