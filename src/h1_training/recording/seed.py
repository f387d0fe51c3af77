"""Bring a seed user's episodes into our layout, and write episodes back in the variant the seed's converter reads
(no rclpy). Both read through ``recording.reader``, write into a hidden temporary file, verify every frame of what
they wrote against the source, and only then rename it into place; neither ever writes to the source or replaces
an existing file.

Import (``h1-training import-seed SRC DST``)::

    SRC/<anything>/episode_<n>.hdf5 (any variant)  ->  DST/training_session_epoch<E>/episode_<i>.hdf5 (our layout)

- E: the ``epoch_<E>`` or ``training_session_epoch<E>`` folder the source sits in (the seed client saves to
  ``<save_dir>/<task>/epoch_<E>/raw/``), else ``epoch`` (default 1). i: the source's number when free, else the
  next free one. ``DST/seed_import.json`` lists every import (source, its size and mtime, destination, variant):
  running the import again skips what was already imported.
- Frames: JPEG frames are copied byte for byte; raw RGB frames are JPEG-encoded at quality 85 (the recorder's) and
  verified to decode to within ``RAW_TOLERANCE`` grey levels (mean absolute difference) of the source.
- A camera the source did not record is filled with the recorder's placeholder frame and flagged in
  ``quality/placeholder/<camera>`` (what the recorder does for a missing camera). A 26-wide seed qpos/action keeps
  its 12 hand columns in ``seed/qpos_hands`` / ``seed/action_hands``; the seed's ``advantage`` label becomes our
  ``success`` attr; its other attrs are kept; ``seed_source`` and ``seed_variant`` say where it came from.
- An unusable source (truncated, no head camera, a frame that does not decode) is skipped with the reason.

Export (``h1-training export-seed SRC DST``, the dataset manager's ``seed`` export format)::

    observations/qpos [T,14] float32, action [T,14] float32, phase [T] 'S10'      (gzip, as the seed client)
    observations/images/ego_cam [T,H,W,3] uint8 raw RGB                           (the seed converter reads
                                                                                   ego_cam as raw arrays)
    observations/images/cam_left_wrist, cam_right_wrist [T] vlen uint8 JPEG       (it decodes wrists either way;
                                                                                   a camera never recorded is
                                                                                   left out: it pads zeros)
    attrs: episode_length, fps, timestamp, policy_frames, human_frames, advantage (success == 1), source
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from h1_training.recording import layout as L
from h1_training.recording.reader import (
    JPEG,
    LAYOUT_OURS,
    EpisodeError,
    EpisodeView,
    open_episode,
)
from h1_training.robot_model import CAMERA_NAMES

IMPORT_MANIFEST = "seed_import.json"
EXPORT_MANIFEST = "seed_export.json"
RAW_TOLERANCE = 8.0          # grey levels: mean |decoded JPEG - raw source| allowed for a re-encoded raw frame
PLACEHOLDER_REASON = "not recorded in the seed file"
EXPORT_SOURCE = "h1_training"
_EPOCH_RE = re.compile(r"^(?:training_session_)?epoch_?(\d+)$")
_TMP_SUFFIX = ".importing"


@dataclass
class Imported:
    source: str
    dest: str
    variant: str
    frames: int
    size: int = 0
    mtime_ns: int = 0


@dataclass
class SeedReport:
    """What an import or export did: one line per episode (``lines()``)."""

    done: list[Imported] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)     # source -> reason
    already: list[str] = field(default_factory=list)          # imported by an earlier run (manifest)

    def lines(self, verb: str = "imported") -> list[str]:
        out = [f"{verb} {d.source} -> {d.dest} ({d.variant}, {d.frames} frames)" for d in self.done]
        out += [f"already {verb} {s}" for s in self.already]
        out += [f"skipped  {s}: {why}" for s, why in self.skipped.items()]
        return out

    def as_dict(self) -> dict:
        return {"done": [asdict(d) for d in self.done], "skipped": self.skipped, "already": self.already}


def find_sources(src: Path) -> list[Path]:
    """Episode files under ``src`` (or ``src`` itself), hidden and in-progress files left out, in a stable order."""
    src = Path(src)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"{src} does not exist")
    files = [p for p in src.rglob("*.hdf5") if not any(part.startswith(".") for part in p.relative_to(src).parts)]

    def key(p: Path) -> tuple:
        idx = L.episode_index_of(p)
        return (str(p.parent), idx if idx is not None else 1 << 30, p.name)

    return sorted(files, key=key)


def epoch_of(path: Path, root: Path, default: int) -> int:
    """The epoch a source file belongs to: its nearest ``epoch_<E>`` / ``training_session_epoch<E>`` folder."""
    try:
        parts = path.resolve().relative_to(root.resolve()).parts[:-1]
    except ValueError:
        parts = path.parts[:-1]
    parts = (root.resolve().name, *parts)
    for part in reversed(parts):
        m = _EPOCH_RE.match(part)
        if m:
            return int(m.group(1))
    return default


def _check_paths(src: Path, dst: Path) -> None:
    s, d = Path(src).resolve(), Path(dst).resolve()
    if d == s or s in d.parents:
        raise ValueError(f"{dst} is inside the source {src}: the source is never written to")
    if s.is_file() and s.parent == d:
        raise ValueError(f"{dst} holds the source file {src}: the source is never written to")


def _placeholder_jpeg(camera: str, shape_hw: tuple[int, int]) -> bytes:
    from h1_training.jpeg import render_placeholder

    return render_placeholder(camera, PLACEHOLDER_REASON, width=shape_hw[1], height=shape_hw[0],
                              quality=L.JPEG_QUALITY)


def _verify_frames(src: EpisodeView, dst: EpisodeView, same_bytes: Callable[[str], bool]) -> str | None:
    """Every frame of ``dst`` decodes and matches ``src`` (byte-identical JPEG, or raw within RAW_TOLERANCE)."""
    for cam, frames in src.cameras.items():
        out = dst.cameras.get(cam)
        if out is None:
            return f"{cam} missing from the written file"
        for i in range(src.length):
            try:
                got = out.rgb(i)
            except ValueError as exc:
                return f"written {exc}"
            if same_bytes(cam):
                if out.stored(i) != frames.stored(i):
                    return f"camera {cam} frame {i}: written bytes differ from the source"
            else:
                ref = frames.rgb(i)
                if got.shape != ref.shape:
                    return f"camera {cam} frame {i}: written {got.shape}, source {ref.shape}"
                err = float(np.mean(np.abs(got.astype(np.int16) - ref.astype(np.int16))))
                if err > RAW_TOLERANCE:
                    return f"camera {cam} frame {i}: differs from the source by {err:.1f} grey levels on average"
    return None


def _check_source_frames(ep: EpisodeView) -> str | None:
    """A source frame that does not decode makes the episode unusable: say which (before anything is written)."""
    for frames in ep.cameras.values():
        frames.preload()
        for i in range(ep.length):
            try:
                frames.rgb(i)
            except ValueError as exc:
                return str(exc)
    return None


def _same_data(src: EpisodeView, dst: EpisodeView) -> str | None:
    if dst.problems:
        return "written file: " + "; ".join(dst.problems)
    if dst.length != src.length:
        return f"written {dst.length} frames, source {src.length}"
    if not np.array_equal(dst.qpos, src.qpos) or not np.array_equal(dst.action, src.action):
        return "written qpos/action differ from the source"
    if dst.phase != src.phase:
        return "written phase differs from the source"
    return None


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        raise FileExistsError(f"{final} appeared while importing; nothing was overwritten")
    os.rename(tmp, final)


# --- import ------------------------------------------------------------------------------------------------------
def _import_one(ep: EpisodeView, source: Path, final: Path, epoch: int, index: int) -> None:
    """Write ``ep`` at ``final`` in our layout (via a hidden temporary file), verified; raises ValueError why not."""
    t = ep.length
    head = ep.cameras[CAMERA_NAMES[0]]
    shape_hw = head.rgb(0).shape[:2] if t else (480, 640)
    images: dict[str, list[bytes]] = {}
    for cam in CAMERA_NAMES:
        frames = ep.cameras.get(cam)
        if frames is None:
            images[cam] = [_placeholder_jpeg(cam, shape_hw)] * t
        else:
            images[cam] = [frames.jpeg(i) for i in range(t)]
    attrs = {k: v for k, v in ep.attrs.items() if k not in L.CONTRACT_ATTRS and k != L.ATTR_FORMAT_VERSION}
    attrs.update({L.ATTR_SEED_SOURCE: str(source), L.ATTR_SEED_VARIANT: ep.variant.describe(), L.ATTR_EPOCH: epoch,
                  L.ATTR_EPISODE_INDEX: index})
    if ep.success is not None:
        attrs[L.ATTR_SUCCESS] = ep.success
    episode = L.Episode(qpos=ep.qpos, action=ep.action, phase=list(ep.phase), images=images, fps=ep.fps,
                        timestamp=ep.timestamp, attrs=attrs)
    tmp = final.parent / f".{final.name}{_TMP_SUFFIX}"
    try:
        L.write_episode(tmp, episode)
        del images, episode
        qh, ah = ep.hand_columns()
        with h5py.File(tmp, "r+") as f:
            for cam in CAMERA_NAMES:
                f.create_dataset(L.placeholder_key(cam), data=np.full(t, cam not in ep.cameras, dtype=bool))
            if qh is not None:
                f.create_dataset(L.EXTRA_SEED_QPOS_HANDS, data=qh)
            if ah is not None:
                f.create_dataset(L.EXTRA_SEED_ACTION_HANDS, data=ah)
        with open_episode(tmp) as out:
            why = _same_data(ep, out) or _verify_frames(ep, out, lambda cam: ep.cameras[cam].encoding == JPEG)
            if why is None and not out.variant.layout == LAYOUT_OURS:
                why = f"written file reads as {out.variant.describe()}"
        if why is not None:
            raise ValueError(f"verification failed: {why}")
        _publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _read_manifest(path: Path) -> list[dict]:
    try:
        return list(json.loads(path.read_text()).get("imports", []))
    except (OSError, ValueError, AttributeError):
        return []


def import_seed(src: str | Path, dst: str | Path, epoch: int = 1,
                log: Callable[[str], None] = lambda _m: None) -> SeedReport:
    """Import every episode under ``src`` into ``dst`` in our layout (see the module doc). Never writes under
    ``src``; never replaces a file under ``dst``."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    sources = find_sources(src)
    root = src if src.is_dir() else src.parent
    dst.mkdir(parents=True, exist_ok=True)
    manifest_path = dst / IMPORT_MANIFEST
    imports = _read_manifest(manifest_path)
    seen = {(i["source"], i["size"], i["mtime_ns"]) for i in imports}
    report = SeedReport()
    for path in sources:
        st = path.stat()
        ident = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if ident in seen:
            report.already.append(str(path))
            continue
        try:
            with open_episode(path) as ep:
                if ep.problems:
                    raise ValueError("; ".join(ep.problems))
                bad = _check_source_frames(ep)
                if bad:
                    raise ValueError(bad)
                e = epoch_of(path, root, epoch)
                folder = L.session_dir(dst, e)
                folder.mkdir(parents=True, exist_ok=True)
                want = L.episode_index_of(path)
                index = want if want is not None and not L.episode_path(dst, e, want).exists() \
                    and not list(folder.glob(f"episode_{want}.hdf5*")) else L.next_episode_index(folder)
                final = L.episode_path(dst, e, index)
                _import_one(ep, path, final, e, index)
                done = Imported(str(path), str(final), ep.variant.describe(), ep.length, st.st_size, st.st_mtime_ns)
        except (EpisodeError, ValueError, OSError, KeyError) as exc:
            report.skipped[str(path)] = str(exc).replace(f"{path}: ", "")
            log(f"skipped {path}: {report.skipped[str(path)]}")
            continue
        report.done.append(done)
        imports.append({**asdict(done), "source": ident[0]})
        tmp = manifest_path.with_name(f".{IMPORT_MANIFEST}.tmp")
        tmp.write_text(json.dumps({"imports": imports}, indent=2))
        os.replace(tmp, manifest_path)
        log(f"imported {path} -> {final}")
    return report


# --- export ------------------------------------------------------------------------------------------------------
def write_seed_episode(ep: EpisodeView, final: Path) -> None:
    """Write ``ep`` at ``final`` in the variant the seed's converter reads (module doc), verified; ValueError why not.
    """
    t = ep.length
    head = ep.cameras[CAMERA_NAMES[0]]
    first = head.rgb(0)
    placeholder = ep.extra_group(L.EXTRA_PLACEHOLDER)
    # a wrist camera not recorded (or a placeholder all along) is left out: the seed's converter pads it with zeros
    wrists = [c for c in CAMERA_NAMES[1:] if c in ep.cameras and not (c in placeholder and placeholder[c].all())]
    tmp = final.parent / f".{final.name}{_TMP_SUFFIX}"
    try:
        with h5py.File(tmp, "w-") as f:
            obs = f.create_group("observations")
            obs.create_dataset("qpos", data=ep.qpos, compression="gzip")
            images = obs.create_group("images")
            raw = images.create_dataset(CAMERA_NAMES[0], shape=(t, *first.shape), dtype=np.uint8,
                                        chunks=(1, *first.shape), compression="gzip")
            for i in range(t):
                raw[i] = head.rgb(i)
            for cam in wrists:
                frames = ep.cameras[cam]
                ds = images.create_dataset(cam, (t,), dtype=h5py.vlen_dtype(np.dtype("uint8")))
                for i in range(t):
                    ds[i] = np.frombuffer(frames.jpeg(i), dtype=np.uint8)
            f.create_dataset("action", data=ep.action, compression="gzip")
            f.create_dataset(L.PHASE, data=np.array(ep.phase, dtype=L.SEED_PHASE_DTYPE), compression="gzip")
            f.attrs["episode_length"] = t
            f.attrs["fps"] = ep.fps
            f.attrs["timestamp"] = ep.timestamp
            f.attrs["policy_frames"] = ep.phase.count(L.PHASE_POLICY)
            f.attrs["human_frames"] = ep.phase.count(L.PHASE_HUMAN)
            if ep.success is not None:
                f.attrs[L.SEED_ATTR_ADVANTAGE] = bool(ep.success == 1)
            f.attrs[L.SEED_ATTR_SOURCE] = EXPORT_SOURCE
            if ep.attrs.get(L.ATTR_PROMPT):
                f.attrs[L.ATTR_PROMPT] = str(ep.attrs[L.ATTR_PROMPT])
        with open_episode(tmp) as out:
            why = _same_data(ep, out)
            if why is None:
                for i in range(t):  # the raw head frames are the source's decoded frames, exactly
                    if not np.array_equal(out.cameras[CAMERA_NAMES[0]].stored(i), head.rgb(i)):
                        why = f"head camera frame {i} differs from the source"
                        break
            for cam in wrists:
                if why is not None:
                    break
                for i in range(t):  # wrist frames: the bytes written (deterministic for encoded raw), decodable
                    if out.cameras[cam].stored(i) != ep.cameras[cam].jpeg(i):
                        why = f"camera {cam} frame {i}: written bytes differ from the source"
                        break
                    try:
                        out.cameras[cam].rgb(i)
                    except ValueError as exc:
                        why = f"written {exc}"
                        break
        if why is not None:
            raise ValueError(f"verification failed: {why}")
        _publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def export_seed(episodes: list[Path], dst: str | Path, log: Callable[[str], None] = lambda _m: None,
                cancel: threading.Event | None = None) -> SeedReport:
    """Write each of ``episodes`` (any variant) as ``dst/<its folder name>/<its file name>`` in the seed converter's
    variant. ``dst`` must not hold those files already (nothing is replaced). ``cancel`` stops between files."""
    dst = Path(dst)
    report = SeedReport()
    for path in episodes:
        if cancel is not None and cancel.is_set():
            break
        path = Path(path)
        final = dst / path.parent.name / path.name
        try:
            _check_paths(path.parent, dst)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                raise FileExistsError(f"{final} exists; nothing was overwritten")
            with open_episode(path) as ep:
                if ep.problems:
                    raise ValueError("; ".join(ep.problems))
                write_seed_episode(ep, final)
                report.done.append(Imported(str(path), str(final), ep.variant.describe(), ep.length))
        except (EpisodeError, ValueError, OSError, KeyError) as exc:
            report.skipped[str(path)] = str(exc).replace(f"{path}: ", "")
            log(f"skipped {path}: {report.skipped[str(path)]}")
            continue
        log(f"exported {path} -> {final}")
    if report.done:
        (dst / EXPORT_MANIFEST).write_text(json.dumps(
            {**report.as_dict(), "format": "seed converter variant (ego_cam raw RGB)",
             "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    return report
