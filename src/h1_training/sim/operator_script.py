"""The scripted operator of the simulated session (no rclpy): what the "policy" commands and where the
operator's hand pulls the arms, as functions of time within an episode.

An episode is: ``policy`` for ``policy_s`` seconds (the arms reach toward a slightly wrong pose, as a weak
policy does), then ``human`` for ``human_s`` seconds (damping: the operator guides the arms to the right
pose and back toward home). Trajectories are minimum-jerk so nothing asks the arm for a jump.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from h1_training.robot_model import ARM_HOME_RAD, ARM_LOWER_RAD, ARM_UPPER_RAD


def min_jerk(start: np.ndarray, goal: np.ndarray, s: float) -> np.ndarray:
    """Minimum-jerk interpolation, s in [0, 1] (clipped)."""
    s = min(max(s, 0.0), 1.0)
    blend = 10 * s**3 - 15 * s**4 + 6 * s**5
    return start + (goal - start) * blend


# A two-handed reach in front of the torso (in-limit for both arms: see robot_model limits).
REACH_RAD = np.array([-0.9, 0.25, 0.0, 1.1, 0.0, 0.1, 0.0, -0.9, -0.25, 0.0, 1.1, 0.0, 0.1, 0.0])
# The pose a weak policy reaches instead: short of the object and off to the side.
POLICY_MISS_RAD = REACH_RAD + np.array([0.35, 0.15, 0.1, -0.3, 0.0, 0.0, 0.0, 0.35, -0.15, -0.1, -0.3, 0.0, 0.0, 0.0])


@dataclass
class OperatorScript:
    policy_s: float = 6.0
    human_s: float = 6.0
    start_pose: np.ndarray = field(default_factory=lambda: ARM_HOME_RAD.copy())

    def __post_init__(self) -> None:
        if self.policy_s <= 0 or self.human_s <= 0:
            raise ValueError("policy_s and human_s must be positive")
        for pose in (REACH_RAD, POLICY_MISS_RAD):
            assert np.all(pose >= ARM_LOWER_RAD) and np.all(pose <= ARM_UPPER_RAD)

    @property
    def duration_s(self) -> float:
        return self.policy_s + self.human_s

    def phase(self, t: float) -> str:
        return "policy" if t < self.policy_s else "human"

    def policy_target(self, t: float) -> np.ndarray:
        """Arm target the scripted policy commands at time t (reach, then hold where it ended)."""
        return min_jerk(self.start_pose, POLICY_MISS_RAD, t / (0.8 * self.policy_s))

    def operator_target(self, t: float, arm_at_handover: np.ndarray) -> np.ndarray:
        """Where the operator pulls the arms during damping: to the right pose, then back home."""
        th = t - self.policy_s
        half = self.human_s / 2
        if th < half:
            return min_jerk(arm_at_handover, REACH_RAD, th / (0.8 * half))
        return min_jerk(REACH_RAD, ARM_HOME_RAD, (th - half) / (0.8 * half))


# --- the operator of a hil_session (keys, labels, hands; the session owns the policy, recorder and sync) ----------
SUCCESS_TOL_RAD = 0.1      # the operator calls a reach a success within this of REACH_RAD on every joint
HOME_TOL_RAD = 0.05        # arms farther than this from home are put back before the next episode
KEY_RETRY_S = 1.0          # a refused key is pressed again after this (the status may have lagged the key)
MAX_KEY_TRIES = 3
SYNC_RETRIES = 2           # a failed sync is retried this often ('y' in SYNCING), then the operator gives up


def correction_target(t: float, arm_at_handover: np.ndarray, guide_s: float) -> np.ndarray:
    """Where the hand pulls the arms t seconds into DAMPING: to the right pose over ``guide_s``, then it holds
    them there until the episode is saved (so the episode ends at the corrected pose)."""
    return min_jerk(arm_at_handover, REACH_RAD, t / guide_s)


def reset_target(t: float, start: np.ndarray, reset_s: float) -> np.ndarray:
    """Where the hand pulls the arms t seconds into a between-episode reset: back home."""
    return min_jerk(start, ARM_HOME_RAD, t / (0.7 * reset_s))


def reached(q: np.ndarray, tol: float = SUCCESS_TOL_RAD) -> bool:
    return bool(np.max(np.abs(np.asarray(q) - REACH_RAD)) < tol)


@dataclass
class Step:
    """What the operator does now: press ``key`` (None: nothing), pull the arms toward ``hand`` (None: hands
    off), put the arms back home first (``reset``), or stop (``done``; ``error`` says why when it failed)."""

    key: str | None = None
    hand: np.ndarray | None = None
    reset: bool = False
    done: bool = False
    error: str = ""
    note: str = ""


@dataclass
class SessionOperator:
    """A person at hil_console, scripted: reacts to ``hil_session/status`` states the way the seed's Typical Session
    Flow describes, for ``epochs`` epochs of ``episodes_per_epoch`` episodes each.

    READY: y (after the arms are put back home, when ``reset_home``, or out of a latched FAULT); EXECUTING: s once
    the policy had the arm (TRACK) for ``policy_s``; LABELING: y when the arms reached the right pose, else n;
    DAMPING: guide the arms to REACH_RAD and hold them there, e after ``human_s``; DECIDING: y for another episode,
    n to finish the epoch (sync). After the last epoch: wait for the weights trained on it (READY with a newer
    epoch, when ``wait_final_weights``), then Ctrl+C. Feed every status in order to :meth:`observe`, call
    :meth:`step` at the control rate, and report each key's reply to :meth:`pressed`.
    """

    epochs: int = 2
    episodes_per_epoch: int = 1
    policy_s: float = 4.0
    human_s: float = 3.0
    reset_home: bool = True
    wait_final_weights: bool = True
    track_wait_s: float = 10.0        # EXECUTING without TRACK this long: press s anyway (the session failed it)
    stall_s: float = 120.0            # no state change this long (WAITING for weights, SYNCING): give up

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.episodes_per_epoch < 1:
            raise ValueError("epochs and episodes_per_epoch must be >= 1")
        if self.policy_s <= 0 or self.human_s <= 0 or self.stall_s <= 0:
            raise ValueError("policy_s, human_s and stall_s must be positive")
        self.state = ""
        self.epoch = -1
        self.episodes_saved = 0
        self.allowed: tuple[str, ...] = ()
        self.since = 0.0                  # when the current state was first seen
        self.epochs_done: list[int] = []  # epochs finished with 'n' in DECIDING (synced next)
        self.labels: list[int] = []       # the operator's verdict per episode (1 reached, 0 missed)
        self.interrupted = False
        self.error = ""
        self._key_sent: str | None = None
        self._key_time = 0.0
        self._key_tries = 0
        self._track_since: float | None = None
        self._handover: np.ndarray | None = None
        self._sync_failures = 0
        self._reset_done = False

    @property
    def finished(self) -> bool:
        return len(self.epochs_done) >= self.epochs

    def observe(self, state: str, epoch: int, episodes_saved: int, allowed: tuple[str, ...], now: float) -> None:
        """One hil_session/status, in the order they were published."""
        failed_sync = state == "SYNCING" and "y" in allowed and not (self.state == state and "y" in self.allowed)
        self.epoch, self.episodes_saved, self.allowed = epoch, episodes_saved, tuple(allowed)
        if failed_sync:  # SYNCING offers y/n only after a failed sync: one more failure, a fresh key
            self._sync_failures += 1
            self._key_sent, self._key_tries = None, 0
        if state != self.state:
            if self.state == "SYNCING":  # that epoch's sync is over (synced or skipped): the next one starts at 0
                self._sync_failures = 0
            self.state, self.since = state, now
            self._key_sent, self._key_tries = None, 0
            self._track_since, self._handover = None, None
            self._reset_done = False

    def pressed(self, key: str, accepted: bool, now: float) -> None:
        """The session's reply to ``key``; a refused key is tried again a little later (at most MAX_KEY_TRIES)."""
        if accepted:
            if key == "n" and self.state == "DECIDING":
                self.epochs_done.append(self.epoch)
            elif key in ("y", "n") and self.state == "LABELING":
                self.labels.append(1 if key == "y" else 0)
            elif key == "ctrl+c":
                self.interrupted = True
            return
        self._key_time = now
        if self._key_tries >= MAX_KEY_TRIES:
            self.error = f"the session refused '{key}' {MAX_KEY_TRIES} times in {self.state}"

    def arms_reset(self) -> None:
        """The between-episode reset the last Step asked for is done."""
        self._reset_done = True

    def _press(self, key: str, now: float, note: str = "", hand: np.ndarray | None = None) -> Step:
        if self._key_sent == key and (self._key_tries >= MAX_KEY_TRIES or now - self._key_time < KEY_RETRY_S):
            return Step(hand=hand)  # sent (or refused) already in this state
        self._key_sent, self._key_tries, self._key_time = key, self._key_tries + 1, now
        return Step(key=key, hand=hand, note=note)

    def step(self, now: float, q: np.ndarray | None, arm_mode: str) -> Step:
        """What to do now, given the arms' measured pose ``q`` and the arm node's mode."""
        if self.error:
            return Step(done=True, error=self.error)
        state, waited = self.state, now - self.since
        if state == "STOPPED":
            if self.interrupted and self.finished:
                return Step(done=True)
            return Step(done=True, error=f"the session stopped after {len(self.epochs_done)} of {self.epochs} "
                                         f"epoch(s)")
        if state == "READY":
            if self.finished:
                return self._press("ctrl+c", now, f"weights of epoch {self.epoch} arrived: all {self.epochs} "
                                                  f"epoch(s) done, Ctrl+C")
            if arm_mode == "FAULT" and not self._reset_done and q is not None:
                # the arm latched FAULT (rt/lowstate went silent); the session says "set HOLD first": a person
                # puts the arms back (DAMPING, home, HOLD) before the next episode instead of pressing y into it
                return Step(reset=True, note="the arm is in FAULT: putting it back (HOLD) before the next episode")
            if (self.reset_home and not self._reset_done and q is not None
                    and np.max(np.abs(q - ARM_HOME_RAD)) > HOME_TOL_RAD):
                return Step(reset=True, note="putting the arms back home before the next episode")
            return self._press("y", now, f"epoch {self.epoch}: start episode {self.episodes_saved + 1}/"
                                         f"{self.episodes_per_epoch}")
        if state == "EXECUTING":
            if arm_mode == "TRACK" and self._track_since is None:
                self._track_since = now
            started = self._track_since if self._track_since is not None else self.since + self.track_wait_s
            if now - started >= self.policy_s:
                return self._press("s", now, f"policy had the arm for {now - started:.1f} s: stop")
            return Step()
        if state == "LABELING":
            if q is None:
                return Step()
            ok = reached(q)
            return self._press("y" if ok else "n", now, "the policy reached the target" if ok else
                               f"the policy missed the target by {np.max(np.abs(q - REACH_RAD)):.2f} rad")
        if state == "DAMPING":
            if self._handover is None:
                if q is None:
                    return Step()
                self._handover = q.copy()
            hand = correction_target(waited, self._handover, max(0.6 * self.human_s, 0.5))
            if waited >= self.human_s:
                return self._press("e", now, f"arms guided to the right pose for {waited:.1f} s: save", hand)
            return Step(hand=hand)
        if state == "SAVING":
            return Step(hand=REACH_RAD.copy())  # the hand stays on the arms until the session holds them
        if state == "DECIDING":
            if self.episodes_saved < self.episodes_per_epoch:
                return self._press("y", now, f"{self.episodes_saved}/{self.episodes_per_epoch} episodes: another")
            return self._press("n", now, f"epoch {self.epoch} done ({self.episodes_saved} episode(s)): finish, sync")
        if state == "SYNCING":
            if "y" in self.allowed:  # the sync failed: retry, then give up
                if self._sync_failures > SYNC_RETRIES:
                    return Step(done=True, error=f"sync of epoch {self.epoch} failed {self._sync_failures} times")
                return self._press("y", now, "sync failed: retry")
            if waited > self.stall_s:
                return Step(done=True, error=f"epoch {self.epoch} still syncing after {waited:.0f} s")
            return Step()
        if state == "WAITING":
            if self.finished and not self.wait_final_weights:
                return self._press("ctrl+c", now, f"all {self.epochs} epoch(s) done, Ctrl+C")
            if waited > self.stall_s:
                what = "the weights trained on the last epoch" if self.finished else "new weights"
                return Step(done=True, error=f"no {what} from the policy server in {waited:.0f} s")
            return Step()
        return Step()
