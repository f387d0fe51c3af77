"""``/lerobot/start_data_collection``: which modes exist and how a collection drives ``hil_session``.

hil_session (the H1 seed's session) records every episode; the plan only presses the keys between episodes that
an operator would press to keep collecting (``y`` in READY to start an episode, ``y`` in DECIDING for another,
``n`` in DECIDING once the target is reached, which ends the epoch and syncs it). The operator still stops the
policy (``s``), labels, corrects and saves (``e``): the human stays in the loop.

    hil           policy drives, the operator corrects in damping (the seed's HIL flow)
    policy        evaluation rollouts: the same session, the operator labels and saves without correcting
    kinesthetic   damping-only demonstrations: the arm in damping from the start, no policy; the operator moves
                  it by hand and saves (e)
    teleoperation the arm follows targets from ``teleop/arm_target`` (clamped by the arm's safety layer, HOLD
                  when they go stale); the operator saves (e) or takes over in damping (s)

The manager sets hil_session's ``collection_mode`` parameter to the mode (``PARAMETER``) before the first key.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("hil", "policy", "kinesthetic", "teleoperation")
PARAMETER = "collection_mode"   # hil_session's parameter (session/settings.py)


@dataclass
class CollectionPlan:
    mode: str
    target_episodes: int
    start_total: int              # hil_session's episodes_total when the plan started
    collected: int = 0
    finished: bool = False
    last_total: int = -1          # the session's count at the last status (a drop: the session restarted)

    @classmethod
    def create(cls, mode: str, target_episodes: int, start_total: int) -> CollectionPlan:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        if not 1 <= target_episodes <= 100000:
            raise ValueError(f"target_episodes must be 1..100000, got {target_episodes}")
        return cls(mode, target_episodes, start_total)

    def next_key(self, state_name: str, episodes_total: int) -> str:
        """The key to press for the session's state now ("" = nothing; the operator's turn)."""
        last = self.start_total if self.last_total < 0 else self.last_total
        if episodes_total < last:  # a new session (its count restarts at 0): keep what was collected
            self.start_total = episodes_total - self.collected
        self.last_total = episodes_total
        self.collected = max(0, episodes_total - self.start_total)
        done = self.collected >= self.target_episodes
        if self.finished:
            return ""
        if state_name == "READY" and not done:
            return "y"
        if state_name == "DECIDING":
            if done:
                self.finished = True
                return "n"
            return "y"
        return ""

    def describe(self) -> str:
        state = "finished" if self.finished else "collecting"
        return f"{self.mode}: {self.collected}/{self.target_episodes} episodes ({state})"
