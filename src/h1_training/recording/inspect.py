"""Check episode files and report what an operator or trainer needs to know (no rclpy): the variant of the seed's
HDF5 the file is in, frames, duration, achieved rate, missed ticks, policy/human split, camera problems.

Files are read through ``recording.reader``: every variant the seed wrote is valid when its data is usable (the
head camera as ``cam_head`` or ``ego_cam``, JPEG or raw frames, with or without phase); the figures that need our
extras are then ``None``. A problem is what makes the episode unusable (a truncated dataset, no head camera, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from h1_training.recording import layout as L
from h1_training.recording.reader import EpisodeError, EpisodeView, decode_jpeg, open_episode
from h1_training.robot_model import CAMERA_NAMES


@dataclass
class CameraReport:
    placeholder_share: float | None = None
    stale_share: float | None = None
    checked: int = 0          # frames decoded
    undecodable: int = 0
    mean_kb: float = 0.0
    recorded: bool = True     # False: the file holds no such camera (a seed variant without wrist cameras)
    encoding: str = ""        # "jpeg" or "raw" (reader.JPEG / reader.RAW)


@dataclass
class EpisodeReport:
    path: str
    valid: bool
    problems: list[str] = field(default_factory=list)
    variant: str = ""         # reader.Variant.describe(): "seed client layout, cam_head JPEG", ...
    warnings: list[str] = field(default_factory=list)
    frames: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    achieved_rate_hz: float | None = None
    missed_ticks: int | None = None
    policy_frames: int = 0
    human_frames: int = 0
    success: int | None = None
    recovered: bool = False
    recovered_reason: str = ""
    end_reason: str = ""
    prompt: str = ""
    epoch: int | None = None
    episode_index: int | None = None
    stale_share: dict[str, float] = field(default_factory=dict)
    cameras: dict[str, CameraReport] = field(default_factory=dict)
    model_versions: list[str] = field(default_factory=list)  # distinct non-empty models of the policy frames

    def as_dict(self) -> dict:
        return asdict(self)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


DECODE_MODES = ("sample", "quick", "all", "none")


def _decode_indices(t: int, decode: str) -> list[int]:
    """Frames decoded per camera: "sample" 12 spread over the episode, "quick" 3 (first, middle, last: a recording
    cut short shows in its last frame), "all", "none"."""
    if decode == "none" or t == 0:
        return []
    if decode == "all":
        return list(range(t))
    n = 3 if decode == "quick" else 12
    return sorted(set(np.linspace(0, t - 1, num=min(t, n)).astype(int).tolist()))


def inspect_episode(path: str | Path, decode: str = "sample", warn_share: float = 0.01) -> EpisodeReport:
    """``decode``: "sample" (12 frames per camera decoded), "quick" (3: first, middle, last; the catalog's scan of
    thousands of files), "all" or "none". Any variant of the seed's HDF5 is read
    (``recording.reader``): ``variant`` says which; only what cannot be used is a problem."""
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}; got {decode!r}")
    path = Path(path)
    rep = EpisodeReport(path=str(path), valid=False)
    try:
        ep = open_episode(path)
    except EpisodeError as exc:
        rep.problems.append(str(exc).replace(f"{path}: ", ""))
        return rep
    with ep:
        rep.variant = ep.variant.describe()
        rep.problems = list(ep.problems)
        rep.warnings = list(ep.warnings)
        if rep.problems:
            return rep
        try:
            _fill(rep, ep, decode, warn_share)
        except Exception as exc:  # noqa: BLE001 - a damaged file is a finding, not a crash of the tool
            rep.problems.append(f"damaged file: {type(exc).__name__}: {exc}")
    rep.valid = not rep.problems
    return rep


def _fill(rep: EpisodeReport, ep: EpisodeView, decode: str, warn_share: float) -> None:
    t = ep.length
    a = ep.attrs
    rep.frames = t
    rep.fps = ep.fps
    rep.policy_frames = int(a["policy_frames"])
    rep.human_frames = int(a["human_frames"])
    rep.success = ep.success
    rep.recovered = bool(a.get(L.ATTR_RECOVERED, False))
    rep.recovered_reason = _s(a.get(L.ATTR_RECOVERED_REASON, ""))
    rep.end_reason = _s(a.get(L.ATTR_END_REASON, ""))
    rep.prompt = _s(a.get(L.ATTR_PROMPT, ""))
    rep.epoch = int(a[L.ATTR_EPOCH]) if L.ATTR_EPOCH in a else None
    rep.episode_index = int(a[L.ATTR_EPISODE_INDEX]) if L.ATTR_EPISODE_INDEX in a else None
    rep.missed_ticks = int(a[L.ATTR_MISSED_TICKS]) if L.ATTR_MISSED_TICKS in a else None
    ns = ep.extra(L.EXTRA_SAMPLE_TIME_NS)
    if ns is not None and t > 1 and len(ns) >= t:
        ns = ns[:t]
        span = (int(ns[-1]) - int(ns[0])) / 1e9
        rep.duration_s = span
        rep.achieved_rate_hz = (t - 1) / span if span > 0 else None
        if np.any(np.diff(ns) <= 0):
            rep.problems.append("sample times are not strictly increasing")
    else:
        rep.duration_s = t / rep.fps if rep.fps > 0 else 0.0
        if L.ATTR_ACHIEVED_RATE in a:
            rep.achieved_rate_hz = float(a[L.ATTR_ACHIEVED_RATE])
    versions = ep.text_list(L.EXTRA_MODEL_VERSION) or []
    rep.model_versions = [v for v in dict.fromkeys(versions[:t]) if v]
    stale = ep.extra_group(L.EXTRA_STALE)
    for src in L.STALE_SOURCES:
        if src in stale and t:
            rep.stale_share[src] = float(np.mean(stale[src][:t]))
    placeholder = ep.extra_group(L.EXTRA_PLACEHOLDER)
    idx = _decode_indices(t, decode)
    for cam in CAMERA_NAMES:
        frames = ep.cameras.get(cam)
        cr = CameraReport(recorded=frames is not None)
        if frames is None:
            rep.cameras[cam] = cr
            continue
        cr.encoding = frames.encoding
        if cam in placeholder and t:
            cr.placeholder_share = float(np.mean(placeholder[cam][:t]))
        if cam in stale and t:
            cr.stale_share = float(np.mean(stale[cam][:t]))
        sizes = []
        first_error = ""
        for i, data in zip(idx, frames.stored_rows(idx)):  # each sampled row read once, in one call
            sizes.append(len(data) if isinstance(data, bytes) else data.nbytes)
            cr.checked += 1
            if not isinstance(data, bytes):
                continue  # raw RGB: nothing to decode
            try:
                decode_jpeg(data, cam, i)
            except ValueError as exc:
                cr.undecodable += 1
                first_error = first_error or str(exc)
        cr.mean_kb = float(np.mean(sizes) / 1e3) if sizes else 0.0
        if cr.undecodable:
            rep.problems.append(f"{cam}: {cr.undecodable} of {cr.checked} checked frames do not decode "
                                f"({first_error})")
        if cr.placeholder_share and cr.placeholder_share >= warn_share:
            rep.warnings.append(f"{cam}: {cr.placeholder_share:.0%} placeholder frames (camera missing)")
        if cr.stale_share and cr.stale_share >= warn_share:
            rep.warnings.append(f"{cam}: {cr.stale_share:.0%} stale frames")
        rep.cameras[cam] = cr
    for src in ("qpos", "hand_state"):
        share = rep.stale_share.get(src)
        if share and share >= warn_share:
            rep.warnings.append(f"{src}: {share:.0%} stale samples")
    if rep.missed_ticks:
        rep.warnings.append(f"{rep.missed_ticks} missed ticks")
    if rep.recovered:
        rep.warnings.append(f"recovered after a crash: {rep.recovered_reason}")


@dataclass
class FolderReport:
    episodes: list[EpisodeReport]
    partials: list[str]          # unsaved (recording now, or left by a crash)
    unrecoverable: list[str]

    @property
    def invalid(self) -> list[EpisodeReport]:
        return [e for e in self.episodes if not e.valid]

    def as_dict(self) -> dict:
        valid = [e for e in self.episodes if e.valid]
        return {
            "episodes": [e.as_dict() for e in self.episodes],
            "partials": self.partials,
            "unrecoverable": self.unrecoverable,
            "summary": {
                "files": len(self.episodes),
                "invalid": len(self.invalid),
                "frames": sum(e.frames for e in valid),
                "duration_s": round(sum(e.duration_s for e in valid), 3),
                "policy_frames": sum(e.policy_frames for e in valid),
                "human_frames": sum(e.human_frames for e in valid),
                "missed_ticks": sum(e.missed_ticks or 0 for e in valid),
                "recovered": sum(1 for e in valid if e.recovered),
            },
        }


def inspect_path(target: str | Path, decode: str = "sample") -> FolderReport:
    """One episode file, or every ``*.hdf5`` below a folder."""
    target = Path(target)
    if target.is_dir():
        files = sorted(target.rglob("*.hdf5"), key=lambda p: (str(p.parent), L.episode_index_of(p) or 0, p.name))
        partials = sorted(str(p) for p in target.rglob(f"*.hdf5{L.PARTIAL_SUFFIX}"))
        bad = sorted(str(p) for p in target.rglob("*" + L.UNRECOVERABLE_SUFFIX))
        return FolderReport([inspect_episode(p, decode) for p in files], partials, bad)
    if not target.exists():
        return FolderReport([EpisodeReport(str(target), False, ["no such file or folder"])], [], [])
    if target.name.endswith(L.PARTIAL_SUFFIX):
        return FolderReport([], [str(target)], [])
    return FolderReport([inspect_episode(target, decode)], [], [])
