"""One view of an episode file, whatever variant of the H1 seed's HDF5 wrote it (no rclpy).

Every part of the project that reads episodes goes through here: ``inspect``, ``convert``, the dataset catalog,
playback, the scripted fit, the auto-train watcher and ``import-seed``. The API::

    from h1_training.recording.reader import open_episode, load_episode

    with open_episode("episode_0.hdf5") as ep:     # EpisodeError only when the file is not readable HDF5 at all
        ep.variant.describe()                      # "seed client layout, cam_head JPEG"
        ep.problems                                # [] or why it cannot be used ("truncated: ...", "missing ...")
        ep.warnings                                # what was derived or is absent but usable
        ep.length, ep.fps, ep.timestamp            # attrs, derived from the data when the file lacks them
        ep.qpos, ep.action                         # [T, 14] float32 (the arms; a 26-wide seed file's first 14)
        ep.phase                                   # [T] "policy" / "human" (derived from action without a phase)
        ep.success                                 # 1 / 0 / None (our label, else the seed's "advantage")
        ep.cameras                                 # {"ego_cam": CameraFrames, ...}: recorded cameras, our names
        ep.missing_cameras                         # ("cam_left_wrist", ...) not recorded in this file
        cam = ep.cameras["ego_cam"]
        cam.rgb(10)                                # HxWx3 uint8 RGB, decoded (JPEG) or read (raw) on access
        cam.jpeg(10)                               # JPEG bytes (raw frames are encoded at quality 85)
        ep.extra(layout.EXTRA_SAMPLE_TIME_NS)      # one of our extra datasets, or None
    episode = load_episode(path, with_images=False)  # a layout.Episode; ValueError with the problems

Playback: open the view once, keep it open, call ``rgb(i)`` for the frame shown (it reads one row).
Cameras are named as in ``robot_model.CAMERA_NAMES`` whatever the file calls them (the seed client's
``cam_head`` is ``ego_cam`` here; ``variant.head_key`` says which it was).

Variants (``Variant.layout``)::

    h1_training layout     ours: the contract plus our extras (format_version attr or timestamps/)
    seed README layout     the contract alone: ego_cam JPEG, phase, the five attrs
    seed client layout     the seed's recording client: cam_head (and wrists) JPEG, phase as 'S10' bytes (older
                           files: no phase, no frame counts), qpos/action 14 or 26 wide
    seed converter layout  ego_cam as raw RGB [T, H, W, 3] uint8 (convert_humanoid_everyday_to_hdf5.py, older
                           files): often no wrist cameras, no phase, attrs fps/num_frames/source

What is missing but can be derived is derived and said in ``warnings``: episode_length (from the datasets),
policy/human frame counts (from phase), phase (action rows of all zeros are human frames: the seed records zeros
during damping), timestamp (the file's modification time), fps (``DEFAULT_FPS``, the seed README's rate).
What cannot be is a problem: no qpos, action or head camera; a per-frame dataset shorter or longer than the others
(a truncated file); attrs that contradict the data; values of the wrong shape or kind.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from h1_training.jpeg import SOI, decode_jpeg_rgb, encode_jpeg_rgb
from h1_training.recording import layout as L
from h1_training.robot_model import CAMERA_NAMES, NUM_ARM_JOINTS, NUM_HAND_JOINTS

DEFAULT_FPS = 50.0       # the seed README's recording rate, used when a file does not say
JPEG = "jpeg"
RAW = "raw"

LAYOUT_OURS = "h1_training layout"
LAYOUT_SEED_README = "seed README layout"
LAYOUT_SEED_CLIENT = "seed client layout"
LAYOUT_SEED_CONVERTER = "seed converter layout"
LAYOUT_UNKNOWN = "unknown layout"


class EpisodeError(ValueError):
    """The file cannot be opened as HDF5 at all (missing, truncated header, not HDF5)."""


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v.item())
    return str(v)


def _attr(v: Any) -> Any:
    """An attr value as plain Python (bytes -> str, numpy scalars -> int/float/bool)."""
    if isinstance(v, bytes):
        return _text(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def encode_jpeg(rgb: np.ndarray, quality: int = L.JPEG_QUALITY) -> bytes:
    """RGB HxWx3 uint8 -> JPEG bytes (the recorder's quality)."""
    return encode_jpeg_rgb(rgb, quality)


def decode_jpeg(data: bytes, camera: str = "", index: int = -1) -> np.ndarray:
    """JPEG bytes -> HxWx3 uint8 RGB; ValueError naming the camera and frame when they do not decode."""
    where = f"camera {camera} frame {index}: " if camera else ""
    if len(data) == 0:
        raise ValueError(f"{where}empty frame (truncated recording)")
    if len(data) < 4 or bytes(data[:2]) != SOI:
        raise ValueError(f"{where}not a JPEG ({len(data)} bytes)")
    try:
        return decode_jpeg_rgb(data)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from exc


def image_encoding(ds: h5py.Dataset) -> str | None:
    """JPEG for a [T] vlen uint8 dataset, RAW for [T, H, W, 3] uint8, None for anything else."""
    if ds.ndim == 1 and ds.dtype.kind == "O" and h5py.check_vlen_dtype(ds.dtype) == np.dtype("uint8"):
        return JPEG
    if ds.ndim == 4 and ds.shape[-1] == 3 and ds.dtype == np.uint8:
        return RAW
    return None


class CameraFrames:
    """One camera's frames as stored: JPEG bytes or raw RGB arrays, read (and decoded) one frame at a time.

    ``preload()`` reads every JPEG row into memory at once (the fast path for a converter that decodes in threads);
    raw frames are always read per row (a 640x480 episode of raw frames would not fit in memory)."""

    def __init__(self, name: str, key: str, ds: h5py.Dataset, encoding: str) -> None:
        self.name = name            # our name (robot_model.CAMERA_NAMES)
        self.key = key              # the dataset's path in the file
        self.encoding = encoding    # JPEG or RAW
        self._ds = ds
        self._rows: list[bytes] | None = None

    def __len__(self) -> int:
        return int(self._ds.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int, int] | None:
        """(H, W, 3) of raw frames; None for JPEG (known once a frame is decoded)."""
        return tuple(int(v) for v in self._ds.shape[1:]) if self.encoding == RAW else None  # type: ignore[return-value]

    def preload(self) -> CameraFrames:
        if self.encoding == JPEG and self._rows is None:
            self._rows = [np.asarray(b, dtype=np.uint8).tobytes() for b in self._ds[:]]
        return self

    def stored(self, i: int) -> bytes | np.ndarray:
        """Frame ``i`` as stored: JPEG bytes or an HxWx3 uint8 array."""
        if self.encoding == JPEG:
            if self._rows is not None:
                return self._rows[i]
            return np.asarray(self._ds[i], dtype=np.uint8).tobytes()
        return np.asarray(self._ds[i], dtype=np.uint8)

    def stored_rows(self, indices: list[int]) -> list[bytes | np.ndarray]:
        """Frames ``indices`` (increasing) as stored; more than a few JPEG rows in one read (measured with h5py
        3.16: a row costs ~75 us, a point selection ~400 us plus ~10 us a row)."""
        if self.encoding != JPEG or self._rows is not None or len(indices) <= 6:
            return [self.stored(i) for i in indices]
        return [np.asarray(b, dtype=np.uint8).tobytes() for b in self._ds[list(indices)]]

    def rgb(self, i: int) -> np.ndarray:
        """Frame ``i`` as HxWx3 uint8 RGB; ValueError (naming camera and frame) when it does not decode."""
        data = self.stored(i)
        if isinstance(data, bytes):
            return decode_jpeg(data, self.name, i)
        return data

    def jpeg(self, i: int, quality: int = L.JPEG_QUALITY) -> bytes:
        """Frame ``i`` as JPEG bytes: stored bytes unchanged, raw frames encoded at ``quality``."""
        data = self.stored(i)
        return data if isinstance(data, bytes) else encode_jpeg(data, quality)

    def empty_frames(self) -> int:
        """JPEG rows of 0 bytes (a recording cut short leaves them); 0 for raw frames."""
        if self.encoding != JPEG:
            return 0
        if self._rows is not None:
            return sum(1 for b in self._rows if len(b) == 0)
        return sum(1 for b in self._ds[:] if len(b) == 0)


@dataclass(frozen=True)
class Variant:
    """Which variant of the seed's HDF5 a file is, in words an operator understands (``describe()``)."""

    layout: str                                   # LAYOUT_*
    head_key: str = ""                            # "ego_cam" or "cam_head" ("" when neither)
    encodings: tuple[tuple[str, str], ...] = ()   # (our camera name, JPEG/RAW) of the recorded cameras
    has_phase: bool = True
    qpos_width: int = NUM_ARM_JOINTS
    derived: tuple[str, ...] = ()                 # what the reader derived (attrs, "phase")

    @property
    def missing_cameras(self) -> tuple[str, ...]:
        have = {c for c, _ in self.encodings}
        return tuple(c for c in CAMERA_NAMES if c not in have)

    def describe(self) -> str:
        enc = dict(self.encodings)
        head = CAMERA_NAMES[0]
        parts = [self.layout]
        if self.head_key:
            parts.append(f"{self.head_key} {'JPEG' if enc.get(head) == JPEG else 'raw RGB'}")
        wrist = [c for c in CAMERA_NAMES[1:] if c in enc]
        if wrist and any(enc[c] != enc.get(head) for c in wrist):
            kinds = dict.fromkeys("JPEG" if enc[c] == JPEG else "raw RGB" for c in wrist)
            parts.append("wrists " + "/".join(kinds))
        if self.missing_cameras and self.head_key:
            missing = [c for c in self.missing_cameras if c != head]
            if len(missing) == len(CAMERA_NAMES) - 1:
                parts.append("no wrist cameras")
            elif missing:
                parts.append("no " + ", ".join(missing))
        if not self.has_phase:
            parts.append("no phase")
        if self.qpos_width != NUM_ARM_JOINTS:
            parts.append(f"{self.qpos_width}-wide qpos")
        return ", ".join(parts)


def _camera_keys(images: h5py.Group | None) -> dict[str, str]:
    """Our camera name -> dataset key, for the cameras the file holds (head: ego_cam first, then cam_head)."""
    out: dict[str, str] = {}
    if images is None:
        return out
    for head in L.HEAD_CAMERA_NAMES:
        if head in images:
            out[CAMERA_NAMES[0]] = f"{L.IMAGES}/{head}"
            break
    for cam in CAMERA_NAMES[1:]:
        if cam in images:
            out[cam] = f"{L.IMAGES}/{cam}"
    return out


class EpisodeView:
    """An open episode file (see the module doc). Use as a context manager, or ``close()`` it."""

    def __init__(self, path: str | Path, default_fps: float = DEFAULT_FPS) -> None:
        self.path = Path(path)
        try:
            self._f = h5py.File(self.path, "r")
        except (OSError, ValueError) as exc:
            raise EpisodeError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.cameras: dict[str, CameraFrames] = {}
        self.attrs: dict[str, Any] = {}
        self.length = 0
        self.fps = float(default_fps)
        self.timestamp = ""
        self._qpos: np.ndarray | None = None
        self._action: np.ndarray | None = None
        self._phase: list[str] | None = None
        try:
            self.variant = self._examine(default_fps)
        except Exception as exc:  # noqa: BLE001 - a damaged file is a finding, not a crash of the caller
            self.problems.append(f"damaged file: {type(exc).__name__}: {exc}")
            self.variant = Variant(LAYOUT_UNKNOWN)

    # --- context ---------------------------------------------------------------------------------------------
    def __enter__(self) -> EpisodeView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def missing_cameras(self) -> tuple[str, ...]:
        return tuple(c for c in CAMERA_NAMES if c not in self.cameras)

    # --- examination (shapes and attrs only; nothing big is read) ---------------------------------------------
    def _examine(self, default_fps: float) -> Variant:
        f = self._f
        self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
        derived: list[str] = []
        # each object looked up once (an h5py lookup costs tens of microseconds; a catalog opens thousands)
        top = {key: f.get(key) for key in (L.QPOS, L.ACTION, L.PHASE)}
        dsets = {key: obj for key, obj in top.items() if isinstance(obj, h5py.Dataset)}
        for key in (L.QPOS, L.ACTION):
            if key not in dsets:
                self.problems.append(f"missing dataset {key}")
        images = f.get(L.IMAGES)
        images = images if isinstance(images, h5py.Group) else None
        keys = _camera_keys(images)
        if CAMERA_NAMES[0] not in keys:
            self.problems.append("missing head camera: neither " + " nor ".join(
                f"{L.IMAGES}/{h}" for h in L.HEAD_CAMERA_NAMES))
        if images is not None and all(h in images for h in L.HEAD_CAMERA_NAMES):
            self.warnings.append(f"both {L.HEAD_CAMERA_NAMES[0]} and {L.HEAD_CAMERA_NAMES[1]} present: "
                                 f"{L.HEAD_CAMERA_NAMES[0]} is used")
        encodings = []
        for cam, key in keys.items():
            ds = images[key.rsplit("/", 1)[1]]  # type: ignore[index]
            enc = image_encoding(ds) if isinstance(ds, h5py.Dataset) else None
            if enc is None:
                shape = getattr(ds, "shape", None)
                self.problems.append(f"{key} is neither JPEG bytes ([T] vlen uint8) nor raw RGB ([T,H,W,3] uint8): "
                                     f"{shape} {getattr(ds, 'dtype', type(ds).__name__)}")
                continue
            self.cameras[cam] = CameraFrames(cam, key, ds, enc)
            encodings.append((cam, enc))
        head_key = Path(keys[CAMERA_NAMES[0]]).name if CAMERA_NAMES[0] in keys else ""
        has_phase = L.PHASE in dsets
        qpos_width = NUM_ARM_JOINTS

        # lengths: every per-frame dataset must hold the same number of rows
        rows: dict[str, int] = {}
        shapes = {key: ds.shape for key, ds in dsets.items()}
        for key in (L.QPOS, L.ACTION, L.PHASE):
            if shapes.get(key):
                rows[key] = int(shapes[key][0])
        for cam in self.cameras.values():
            rows[cam.key] = len(cam)
        if L.QPOS in rows:
            q = dsets[L.QPOS]
            if q.ndim != 2 or q.shape[1] < NUM_ARM_JOINTS or q.dtype.kind != "f":
                self.problems.append(f"{L.QPOS} must be [T,{NUM_ARM_JOINTS}] float (or [T,26] with the hands), "
                                     f"is {q.shape} {q.dtype}")
            else:
                qpos_width = int(q.shape[1])
        if L.ACTION in rows:
            a = dsets[L.ACTION]
            if a.ndim != 2 or a.shape[1] < NUM_ARM_JOINTS or a.dtype.kind != "f":
                self.problems.append(f"{L.ACTION} must be [T,{NUM_ARM_JOINTS}] float (or [T,26] with the hands), "
                                     f"is {a.shape} {a.dtype}")
        if has_phase and len(shapes[L.PHASE]) != 1:
            self.problems.append(f"{L.PHASE} must be [T], is {shapes[L.PHASE]}")
        if rows:
            t = rows.get(L.QPOS, max(rows.values()))
            short = {k: n for k, n in rows.items() if n != t}
            for k, n in short.items():
                self.problems.append(f"truncated: {k} holds {n} frames, {L.QPOS} {t}")
            self.length = min(rows.values()) if short else t
        if qpos_width > NUM_ARM_JOINTS:
            self.warnings.append(f"qpos holds {qpos_width} columns (arms + hands, the seed's include_hands); the "
                                 f"first {NUM_ARM_JOINTS} are the arm joints, the rest is kept as recorded")

        # attrs: check those present against the data, derive those absent
        a = self.attrs
        for key, value in (("episode_length", a.get("episode_length")), (L.SEED_ATTR_NUM_FRAMES,
                                                                          a.get(L.SEED_ATTR_NUM_FRAMES))):
            if value is not None and not self.problems and int(value) != self.length:
                self.problems.append(f"attr {key}={value} but datasets hold {self.length} frames")
        if "episode_length" not in a:
            derived.append("episode_length")
        fps = a.get("fps")
        if fps is None:
            derived.append("fps")
            self.warnings.append(f"fps not recorded: assumed {default_fps:g} Hz (the seed README's rate)")
        else:
            try:
                self.fps = float(fps)
            except (TypeError, ValueError):
                self.fps = float("nan")
            if not (math.isfinite(self.fps) and self.fps > 0):
                self.problems.append(f"invalid fps attribute {fps!r}")
        if "timestamp" in a:
            self.timestamp = _text(a["timestamp"])
        else:
            derived.append("timestamp")
            self.timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(os.stat(self.path).st_mtime))
        if not has_phase:
            derived.append("phase")
            self.warnings.append("no phase dataset: phase derived from action (rows of zeros are human frames, as "
                                 "the seed records damping)")
        if not self.problems:
            phases = self.phase
            bad = {p for p in phases if p not in (L.PHASE_POLICY, L.PHASE_HUMAN)}
            if bad:
                self.problems.append(f"phase holds values other than policy/human: {sorted(bad)[:3]}")
            for key, value in (("policy_frames", phases.count(L.PHASE_POLICY)),
                               ("human_frames", phases.count(L.PHASE_HUMAN))):
                if key not in a:
                    derived.append(key)
                elif int(a[key]) != value:
                    self.problems.append(f"attr {key} does not match the phase dataset")
        missing = [c for c in CAMERA_NAMES if c not in self.cameras]
        if missing and CAMERA_NAMES[0] in self.cameras:
            self.warnings.append(f"{', '.join(missing)} not recorded in this file")
        derived_attrs = [d for d in derived if d != "phase"]
        if derived_attrs:
            self.warnings.append("attrs derived from the data: " + ", ".join(derived_attrs))
        if not self.problems:
            a.setdefault("episode_length", self.length)
            a.setdefault("fps", self.fps)
            a.setdefault("timestamp", self.timestamp)
            a.setdefault("policy_frames", self.phase.count(L.PHASE_POLICY))
            a.setdefault("human_frames", self.phase.count(L.PHASE_HUMAN))
        ours = L.ATTR_FORMAT_VERSION in a or "timestamps" in f
        if ours:
            kind = LAYOUT_OURS
        elif head_key == L.SEED_HEAD_CAMERA:
            kind = LAYOUT_SEED_CLIENT
        elif head_key and dict(encodings).get(CAMERA_NAMES[0]) == RAW:
            kind = LAYOUT_SEED_CONVERTER
        elif head_key:
            kind = LAYOUT_SEED_README if has_phase else LAYOUT_SEED_CLIENT
        else:
            kind = LAYOUT_UNKNOWN
        return Variant(kind, head_key, tuple(encodings), has_phase, qpos_width, tuple(derived))

    # --- data (read on first use, then kept) ------------------------------------------------------------------
    def _arm(self, key: str) -> np.ndarray:
        data = np.asarray(self._f[key][: self.length])
        return np.ascontiguousarray(data[:, :NUM_ARM_JOINTS], dtype=np.float32)

    @property
    def qpos(self) -> np.ndarray:
        """[T, 14] float32: the arm joints."""
        if self._qpos is None:
            self._qpos = self._arm(L.QPOS)
        return self._qpos

    @property
    def action(self) -> np.ndarray:
        """[T, 14] float32: the recorded arm command (zeros during damping)."""
        if self._action is None:
            self._action = self._arm(L.ACTION)
        return self._action

    @property
    def phase(self) -> list[str]:
        """[T] "policy" / "human"; without a phase dataset: all-zero action rows are "human"."""
        if self._phase is None:
            if L.PHASE in self._f:
                self._phase = [_text(p) for p in self._f[L.PHASE][: self.length]]
            else:
                zero = ~np.any(self.action != 0.0, axis=1)
                self._phase = [L.PHASE_HUMAN if z else L.PHASE_POLICY for z in zero]
        return self._phase

    @property
    def success(self) -> int | None:
        """Our success label (1/0), else the seed's ``advantage`` attr (True -> 1), else None."""
        if L.ATTR_SUCCESS in self.attrs:
            value = int(self.attrs[L.ATTR_SUCCESS])
            return value if value in (0, 1) else None
        if L.SEED_ATTR_ADVANTAGE in self.attrs:
            return int(bool(self.attrs[L.SEED_ATTR_ADVANTAGE]))
        return None

    def hand_columns(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The seed's hand values beyond the 14 arm columns of qpos and action ([T, 12] as recorded), or None."""
        out = []
        for key in (L.QPOS, L.ACTION):
            ds = self._f[key]
            if ds.ndim == 2 and ds.shape[1] >= NUM_ARM_JOINTS + NUM_HAND_JOINTS:
                cols = slice(NUM_ARM_JOINTS, NUM_ARM_JOINTS + NUM_HAND_JOINTS)
                out.append(np.asarray(ds[: self.length, cols], dtype=np.float32))
            else:
                out.append(None)
        return out[0], out[1]

    def has(self, key: str) -> bool:
        return key in self._f

    def extra(self, key: str) -> np.ndarray | None:
        """One of our extra datasets (``layout.EXTRA_*``) read whole, or None when the file does not hold it."""
        if key not in self._f or not isinstance(self._f[key], h5py.Dataset):
            return None
        return self._f[key][:]

    def extra_group(self, key: str) -> dict[str, np.ndarray]:
        """A group of our extras (e.g. ``layout.EXTRA_PLACEHOLDER``): member name -> data; {} when absent."""
        if key not in self._f or not isinstance(self._f[key], h5py.Group):
            return {}
        return {k: self._f[key][k][:] for k in self._f[key] if isinstance(self._f[key][k], h5py.Dataset)}

    def text_list(self, key: str) -> list[str] | None:
        """A [T] string dataset (e.g. ``layout.EXTRA_MODEL_VERSION``) as str, or None."""
        data = self.extra(key)
        return None if data is None else [_text(v) for v in data]


def open_episode(path: str | Path, default_fps: float = DEFAULT_FPS) -> EpisodeView:
    """Open an episode file of any seed variant (see the module doc). Raises EpisodeError only when the file is not
    readable HDF5; anything else that is wrong is in ``view.problems``."""
    return EpisodeView(path, default_fps)


def describe(path: str | Path) -> str:
    """The variant of an episode file in words ("seed client layout, cam_head JPEG"), or why it cannot be read."""
    try:
        with open_episode(path) as ep:
            return ep.variant.describe()
    except EpisodeError as exc:
        return str(exc)


def load_episode(path: str | Path, with_images: bool = True) -> L.Episode:
    """Any variant as a ``layout.Episode`` (images as JPEG bytes: raw frames encoded at quality 85; a camera the file
    lacks is absent from ``images``). Raises ValueError (EpisodeError) with the reasons when it cannot be used."""
    with open_episode(path) as ep:
        if ep.problems:
            raise EpisodeError(f"{path}: " + "; ".join(ep.problems))
        images: dict[str, list[bytes]] = {}
        if with_images:
            for name, cam in ep.cameras.items():
                cam.preload()
                images[name] = [cam.jpeg(i) for i in range(ep.length)]
        placeholder = {k: v.astype(bool) for k, v in ep.extra_group(L.EXTRA_PLACEHOLDER).items()}
        return L.Episode(
            qpos=ep.qpos, action=ep.action, phase=list(ep.phase), images=images, fps=ep.fps,
            timestamp=ep.timestamp, attrs=dict(ep.attrs), hand_state=ep.extra(L.EXTRA_HAND_STATE),
            sample_ns=ep.extra(L.EXTRA_SAMPLE_TIME_NS), model_version=ep.text_list(L.EXTRA_MODEL_VERSION),
            placeholder=placeholder,
        )


@dataclass
class FolderScan:
    """Episode files under a folder with their variants (what ``import-seed`` and the watcher look at)."""

    usable: list[Path] = field(default_factory=list)
    unusable: dict[str, str] = field(default_factory=dict)     # path -> reason
    variants: dict[str, int] = field(default_factory=dict)     # describe() -> count


def check_files(paths: list[Path]) -> FolderScan:
    """Open each file (shapes and attrs only) and sort it into usable / unusable with the reason."""
    scan = FolderScan()
    for p in paths:
        try:
            with open_episode(p) as ep:
                desc = ep.variant.describe()
                scan.variants[desc] = scan.variants.get(desc, 0) + 1
                if ep.problems:
                    scan.unusable[str(p)] = "; ".join(ep.problems)
                else:
                    scan.usable.append(Path(p))
        except EpisodeError as exc:
            scan.unusable[str(p)] = str(exc).replace(f"{p}: ", "")
    return scan
