"""Offline evaluation of a model on held-out episodes, over the policy server's own WebSocket protocol.

For each held-out episode, at up to ``frames_per_episode`` evenly spaced frames ``t``, the model (pinned with
``?model=<id>``) gets the recorded observation (arm state, the three camera images, the prompt) and answers an
action chunk; its error is the mean absolute joint error [rad] between the chunk's rows and the arm positions the
episode actually reached next (``qpos[t+1 ...]``: where the operator or the accepted policy took the arm). One
number per episode; two models are compared on the same episodes by :func:`compare` with
``evaluation.stats.welch_t_test`` (the gate of ``machine.py``).

The robot side runs this: no torch here, the server does the inference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from h1_training.evaluation.stats import welch_t_test
from h1_training.jpeg import decode_jpeg_rgb
from h1_training.policy.client import PolicyClient
from h1_training.policy.obs import HDF5_TO_OBS_CAMERA
from h1_training.recording.layout import read_episode


@dataclass
class ModelScore:
    model_id: str
    episode_errors: list[float]          # mean |joint error| [rad] per held-out episode
    frames: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.episode_errors)) if self.episode_errors else float("nan")


@dataclass
class Comparison:
    current: str
    candidate: str
    current_error: float
    candidate_error: float
    episodes: int
    p_value: float
    better: bool                         # candidate's error lower, significant at alpha
    alpha: float
    test: str
    summary: str

    def to_dict(self) -> dict:
        return asdict(self)


def episode_error(client: PolicyClient, path: str | Path, frames_per_episode: int, send_images: bool,
                  image_size_wh: tuple[int, int] = (0, 0)) -> tuple[float, int]:
    ep = read_episode(path, with_images=send_images)
    qpos = np.asarray(ep.qpos, dtype=np.float64)
    n = len(qpos)
    if n < 2:
        raise ValueError(f"{path}: {n} frame(s), too short to evaluate")
    times = np.unique(np.linspace(0, n - 2, num=min(frames_per_episode, n - 1)).round().astype(int))
    prompt = str(ep.attrs.get("prompt", ""))
    errors = []
    for t in times:
        obs: dict = {"state": qpos[t].astype(np.float32), "prompt": prompt}
        if send_images:
            obs["images"] = {HDF5_TO_OBS_CAMERA.get(cam, cam): decode_jpeg_rgb(frames[t], image_size_wh)
                             for cam, frames in ep.images.items()}
        actions = np.asarray(client.infer(obs)["actions"], dtype=np.float64)
        rows = min(len(actions), n - 1 - t)
        errors.append(float(np.mean(np.abs(actions[:rows] - qpos[t + 1: t + 1 + rows]))))
    return float(np.mean(errors)), len(times)


def score_model(server_ws_url: str, model_id: str, episodes: Sequence[str | Path], *, api_key: str | None = None,
                frames_per_episode: int = 10, send_images: bool = True, timeout_s: float = 30.0,
                should_stop: Callable[[], bool] = lambda: False) -> ModelScore:
    errors: list[float] = []
    frames = 0
    client = PolicyClient(server_ws_url, None, api_key=api_key, model=model_id, request_timeout=timeout_s,
                          max_attempts=3)
    try:
        client.connect()
        for path in episodes:
            if should_stop():
                raise InterruptedError("evaluation stopped")
            err, k = episode_error(client, path, frames_per_episode, send_images)
            errors.append(err)
            frames += k
    finally:
        client.close()
    return ModelScore(model_id, errors, frames)


def compare(current: ModelScore, candidate: ModelScore, alpha: float = 0.05) -> Comparison:
    """Is the candidate better than the current model on the held-out episodes? Welch's t-test on the
    per-episode errors (two-sided at ``alpha``; "better" needs a lower mean error *and* p < alpha, so an
    unproven candidate is never called better)."""
    test = welch_t_test(current.episode_errors, candidate.episode_errors)  # effect = candidate - current
    better = test.defined and test.effect < 0 and test.p_value < alpha
    verdict = "better" if better else ("worse" if test.effect > 0 and test.p_value < alpha else "not shown better")
    summary = (f"{candidate.model_id}: mean joint error {candidate.mean:.4f} rad vs {current.mean:.4f} rad for "
               f"{current.model_id} over {len(candidate.episode_errors)} held-out episode(s); {test.test_name} "
               f"p = {test.p_value:.3g} (alpha {alpha:g}) -> {verdict}")
    return Comparison(current.model_id, candidate.model_id, current.mean, candidate.mean,
                      len(candidate.episode_errors), float(test.p_value), bool(better), alpha, test.test_name,
                      summary)
