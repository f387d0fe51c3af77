"""The HDF5 episode layout: the one place that names datasets, dtypes and attributes (no rclpy).

The H1 seed's layout is a contract (DESIGN.md §4)::

    observations/qpos                    [T, 14] float32
    observations/images/ego_cam          [T] vlen uint8 (JPEG)
    observations/images/cam_left_wrist   [T] vlen uint8
    observations/images/cam_right_wrist  [T] vlen uint8
    action                               [T, 14] float32   (policy outputs; zeros during damping)
    phase                                [T] string        ("policy" or "human")
    attrs: episode_length, fps, timestamp, policy_frames, human_frames

Everything else (``EXTRA_*``) is added beside it and never changes the contract datasets.
Files live at ``save_dir/training_session_epoch{E}/episode_{i}.hdf5``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from h1_training.robot_model import CAMERA_NAMES, NUM_ARM_JOINTS, NUM_HAND_JOINTS

# --- contract -------------------------------------------------------------------------------------------
QPOS = "observations/qpos"
IMAGES = "observations/images"
IMAGE_KEYS = tuple(f"{IMAGES}/{name}" for name in CAMERA_NAMES)
ACTION = "action"
PHASE = "phase"
PHASE_POLICY = "policy"
PHASE_HUMAN = "human"
CONTRACT_ATTRS = ("episode_length", "fps", "timestamp", "policy_frames", "human_frames")
JPEG_QUALITY = 85

# --- extras (ours; additive only) ----------------------------------------------------------------------
EXTRA_SAMPLE_TIME_NS = "timestamps/sample_ns"        # [T] int64, monotonic-ns tick time
EXTRA_WALL_TIME_NS = "timestamps/wall_ns"            # [T] int64, wall clock at the tick
EXTRA_QPOS_STAMP_NS = "timestamps/qpos_ns"           # [T] int64, capture time of the arm state used (0: none)
EXTRA_HAND_STAMP_NS = "timestamps/hand_ns"           # [T] int64
EXTRA_ACTION_STAMP_NS = "timestamps/action_ns"       # [T] int64, stamp of the arm command used as action
EXTRA_PROPOSAL_STAMP_NS = "timestamps/proposal_ns"   # [T] int64, stamp of the policy proposal used
EXTRA_IMAGE_STAMP_NS = "timestamps/images"           # group: one [T] int64 per camera
EXTRA_HAND_STATE = "observations/hand_state"         # [T, 12] float32, normalized 0..1 (1 = open)
EXTRA_PLACEHOLDER = "quality/placeholder"            # group: one [T] bool per camera
EXTRA_STALE = "quality/stale"                        # group: one [T] bool per source (STALE_SOURCES)
EXTRA_MODEL_VERSION = "model_version"                # [T] string ("" for human frames)
EXTRA_PROPOSED_ACTION = "proposed_action"            # [T, 14] float32, policy proposal during human control
EXTRA_PROPOSED_VALID = "proposed_action_valid"       # [T] bool
# Sources whose staleness is flagged per sample, in this order.
STALE_SOURCES = ("qpos", "hand_state") + tuple(CAMERA_NAMES)

# attrs beside the contract's
ATTR_SUCCESS = "success"                  # int: -1 unknown, 0 failed, 1 succeeded (SaveEpisode.success_label)
ATTR_MISSED_TICKS = "missed_ticks"        # int: 50 Hz ticks that got no sample (never filled in)
ATTR_ACHIEVED_RATE = "achieved_rate_hz"   # float: (T-1) / (last - first sample time)
ATTR_PROMPT = "prompt"
ATTR_EPOCH = "epoch"
ATTR_EPISODE_INDEX = "episode_index"
ATTR_RECOVERED = "recovered"              # bool: rebuilt from a file a crash left behind
ATTR_RECOVERED_REASON = "recovered_reason"
ATTR_END_REASON = "end_reason"            # "saved", "shutdown", "error: ...", "recovered"
ATTR_FRAMES_FLUSHED = "frames_flushed"    # int: rows known complete on disk (updated at every flush)
ATTR_FORMAT_VERSION = "format_version"
ATTR_STALE_AFTER_S = "stale_after_s"
FORMAT_VERSION = 1

# --- the seed's other on-disk variants (read by recording/reader.py, never written by the recorder) --------------
# ThomasChen98/openpi (auto_training) examples/h1_control_client/: the recording client passes its images as
# "cam_head", "cam_left_wrist", "cam_right_wrist" to utils/episode_writer_hdf5.py (JPEG, vlen uint8, quality 85,
# images 224x224), "phase" as fixed-length bytes ('S10'), attrs episode_length, fps, timestamp, advantage,
# policy_frames, human_frames (older versions: no phase, no advantage, no frame counts); qpos/action are [T, 26]
# when it records the hands (include_hands: 14 arm joints + 12 hand values). convert_humanoid_everyday_to_hdf5.py
# stores "ego_cam" as raw RGB [T, H, W, 3] uint8 (no wrist cameras, no phase) with attrs fps, num_frames, source,
# arm_dof. Its convert_h1_data_to_lerobot.py reads "cam_head" (JPEG or raw) or else "ego_cam" as raw arrays.
SEED_HEAD_CAMERA = "cam_head"                       # the seed client's name of the head camera (ours: ego_cam)
HEAD_CAMERA_NAMES = (CAMERA_NAMES[0], SEED_HEAD_CAMERA)
SEED_ATTR_ADVANTAGE = "advantage"                   # bool: the operator's good/bad label (seed client)
SEED_ATTR_NUM_FRAMES = "num_frames"                 # int: the frame count (Humanoid Everyday converter)
SEED_ATTR_SOURCE = "source"                         # str: e.g. "humanoid_everyday"
SEED_PHASE_DTYPE = "S10"                            # the seed client's fixed-length phase strings
# What an import from a seed variant adds beside the contract (additive, like EXTRA_*).
EXTRA_SEED_QPOS_HANDS = "seed/qpos_hands"           # [T, 12] float32: qpos columns 14..25 as recorded (seed units)
EXTRA_SEED_ACTION_HANDS = "seed/action_hands"       # [T, 12] float32: action columns 14..25 as recorded
ATTR_SEED_SOURCE = "seed_source"                    # str: the file an imported episode came from
ATTR_SEED_VARIANT = "seed_variant"                  # str: the variant it was in (reader.Variant.describe())

# An episode being recorded lives under a temporary name beside its final one and is renamed on save.
PARTIAL_SUFFIX = ".partial"

STR_DTYPE = h5py.string_dtype("utf-8")
JPEG_DTYPE = h5py.vlen_dtype(np.dtype("uint8"))



@dataclass(frozen=True)
class Column:
    """One per-sample dataset of a streamed episode: ``[T]`` when ``width`` is 0, else ``[T, width]``."""

    key: str
    kind: str        # "f32", "i64", "bool", "str", "jpeg"
    width: int = 0

    @property
    def dtype(self):
        return {"f32": np.dtype("float32"), "i64": np.dtype("int64"), "bool": np.dtype("bool"),
                "str": STR_DTYPE, "jpeg": JPEG_DTYPE}[self.kind]


def image_stamp_key(camera: str) -> str:
    return f"{EXTRA_IMAGE_STAMP_NS}/{camera}"


def placeholder_key(camera: str) -> str:
    return f"{EXTRA_PLACEHOLDER}/{camera}"


def stale_key(source: str) -> str:
    return f"{EXTRA_STALE}/{source}"


# Every dataset the recorder streams, contract first. All have T rows; a repaired file keeps the same set.
COLUMNS: tuple[Column, ...] = (
    (Column(QPOS, "f32", NUM_ARM_JOINTS),)
    + tuple(Column(key, "jpeg") for key in IMAGE_KEYS)
    + (Column(ACTION, "f32", NUM_ARM_JOINTS), Column(PHASE, "str"))
    + (
        Column(EXTRA_SAMPLE_TIME_NS, "i64"),
        Column(EXTRA_WALL_TIME_NS, "i64"),
        Column(EXTRA_QPOS_STAMP_NS, "i64"),
        Column(EXTRA_HAND_STAMP_NS, "i64"),
        Column(EXTRA_ACTION_STAMP_NS, "i64"),
        Column(EXTRA_PROPOSAL_STAMP_NS, "i64"),
    )
    + tuple(Column(image_stamp_key(c), "i64") for c in CAMERA_NAMES)
    + (Column(EXTRA_HAND_STATE, "f32", NUM_HAND_JOINTS),)
    + tuple(Column(placeholder_key(c), "bool") for c in CAMERA_NAMES)
    + tuple(Column(stale_key(s), "bool") for s in STALE_SOURCES)
    + (
        Column(EXTRA_MODEL_VERSION, "str"),
        Column(EXTRA_PROPOSED_ACTION, "f32", NUM_ARM_JOINTS),
        Column(EXTRA_PROPOSED_VALID, "bool"),
    )
)

# --- on-disk names ------------------------------------------------------------------------------------------
SESSION_PREFIX = "training_session_epoch"  # one folder per epoch: save_dir/training_session_epoch{E}/
SYNC_MARKER = "SYNC_COMPLETE"              # written last by the robot's sync: the epoch folder is complete
LABEL_NOTE_ATTR = "label_note"             # extra attr beside ATTR_SUCCESS (the contract allows extra attrs)
PROVENANCE_FILE = "h1_conversion.json"     # in a converted LeRobot dataset: the HDF5 sources and the summary

UNRECOVERABLE_SUFFIX = ".unrecoverable"     # a damaged recording the repair kept (renamed, never deleted)
EPISODE_GLOB = "episode_*.hdf5"             # saved episodes in a session folder (not the .partial ones)
_EPISODE_RE = re.compile(r"^episode_(\d+)\.hdf5$")
_SESSION_RE = re.compile(rf"^{SESSION_PREFIX}(\d+)$")


def session_dir(save_dir: str | Path, epoch: int) -> Path:
    return Path(save_dir) / f"{SESSION_PREFIX}{epoch}"


def session_epoch_of(path: str | Path) -> int | None:
    """E of a ``training_session_epoch{E}`` folder, None for any other name."""
    m = _SESSION_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_episode_name(name: str) -> bool:
    """A saved episode's file name (``episode_{i}.hdf5``; not the ``.partial`` of one being recorded)."""
    return _EPISODE_RE.match(name) is not None


def episode_name(index: int) -> str:
    return f"episode_{index}.hdf5"


def episode_path(save_dir: str | Path, epoch: int, index: int) -> Path:
    return session_dir(save_dir, epoch) / episode_name(index)


def is_in_progress_name(name: str) -> bool:
    """A file still being written: hidden (rsync's temporary ``.episode_3.hdf5.XXXX``), ``*.partial`` (a
    recording) or ``*.tmp``."""
    return name.startswith(".") or name.endswith((PARTIAL_SUFFIX, ".tmp")) or PARTIAL_SUFFIX in name


def partial_path(final: str | Path) -> Path:
    """Temporary name of an episode while it is being recorded (``episode_3.hdf5.partial``)."""
    return Path(str(final) + PARTIAL_SUFFIX)


def find_partials(save_dir: str | Path) -> list[Path]:
    """Episodes a recorder left unsaved (crash, kill, power loss) under ``save_dir``."""
    root = Path(save_dir)
    if not root.is_dir():
        return []
    return sorted(root.glob(f"{SESSION_PREFIX}*/{EPISODE_GLOB}{PARTIAL_SUFFIX}"))


# "Exclude from training": a sidecar file beside the episode (``episode_3.hdf5.exclude``, its text the reason).
# The recorded file is never rewritten for it; rsync carries it to the GPU server with the episode, and every
# trainer's episode search (``training.convert.find_episodes``, ``training.scripted_fit.episode_files``) skips it.
EXCLUDE_SUFFIX = ".exclude"


def exclude_marker(episode: str | Path) -> Path:
    return Path(str(episode) + EXCLUDE_SUFFIX)


def is_excluded(episode: str | Path) -> bool:
    return exclude_marker(episode).exists()


def set_excluded(episode: str | Path, excluded: bool, reason: str = "") -> bool:
    """Flag (or unflag) an episode; returns whether it was flagged before."""
    marker = exclude_marker(episode)
    before = marker.exists()
    if excluded:
        marker.write_text(reason or "excluded by the operator")
    elif before:
        marker.unlink()
    return before


def episode_index_of(path: str | Path) -> int | None:
    m = _EPISODE_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def next_episode_index(folder: str | Path) -> int:
    """First index not used by a saved or in-progress episode in ``folder``."""
    used = set()
    for p in Path(folder).glob("episode_*"):
        name = p.name.split(".")[0] + ".hdf5"
        idx = episode_index_of(name)
        if idx is not None:
            used.add(idx)
    return max(used) + 1 if used else 0


@dataclass
class Episode:
    """An episode in memory (for tests, generators and conversion). ``images`` maps camera -> list of JPEG bytes."""

    qpos: np.ndarray                      # [T, 14] float32
    action: np.ndarray                    # [T, 14] float32
    phase: list[str]                      # [T]
    images: dict[str, list[bytes]]        # camera name -> T JPEG byte strings
    fps: float = 50.0
    timestamp: str = ""
    attrs: dict = field(default_factory=dict)
    hand_state: np.ndarray | None = None  # [T, 12]
    sample_ns: np.ndarray | None = None   # [T]
    model_version: list[str] | None = None
    placeholder: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.qpos.shape[0])

    @property
    def policy_frames(self) -> int:
        return sum(1 for p in self.phase if p == PHASE_POLICY)

    @property
    def human_frames(self) -> int:
        return sum(1 for p in self.phase if p == PHASE_HUMAN)


def validate(f: h5py.File) -> list[str]:
    """Contract problems of an open episode file; empty list when it satisfies the H1 seed's layout."""
    problems = []
    for key in (QPOS, ACTION, PHASE) + IMAGE_KEYS:
        if key not in f:
            problems.append(f"missing dataset {key}")
    if problems:
        return problems
    t = f[QPOS].shape[0]
    if f[QPOS].shape != (t, NUM_ARM_JOINTS) or f[QPOS].dtype != np.float32:
        problems.append(f"{QPOS} must be [T,{NUM_ARM_JOINTS}] float32, is {f[QPOS].shape} {f[QPOS].dtype}")
    if f[ACTION].shape != (t, NUM_ARM_JOINTS) or f[ACTION].dtype != np.float32:
        problems.append(f"{ACTION} must be [T,{NUM_ARM_JOINTS}] float32, is {f[ACTION].shape} {f[ACTION].dtype}")
    if f[PHASE].shape != (t,):
        problems.append(f"{PHASE} must be [T], is {f[PHASE].shape}")
    for key in IMAGE_KEYS:
        if f[key].shape != (t,):
            problems.append(f"{key} must be [T], is {f[key].shape}")
        elif f[key].dtype.kind != "O" or h5py.check_vlen_dtype(f[key].dtype) != np.dtype("uint8"):
            problems.append(f"{key} must be vlen uint8 (JPEG bytes)")
    for attr in CONTRACT_ATTRS:
        if attr not in f.attrs:
            problems.append(f"missing attribute {attr}")
    if not problems:
        if int(f.attrs["episode_length"]) != t:
            problems.append(f"attr episode_length={f.attrs['episode_length']} but datasets hold {t} frames")
        phases = [p.decode() if isinstance(p, bytes) else str(p) for p in f[PHASE][:]]
        bad = {p for p in phases if p not in (PHASE_POLICY, PHASE_HUMAN)}
        if bad:
            problems.append(f"phase holds values other than policy/human: {sorted(bad)[:3]}")
        if int(f.attrs["policy_frames"]) != phases.count(PHASE_POLICY):
            problems.append("attr policy_frames does not match the phase dataset")
        if int(f.attrs["human_frames"]) != phases.count(PHASE_HUMAN):
            problems.append("attr human_frames does not match the phase dataset")
    return problems


def read_episode(path: str | Path, with_images: bool = True) -> Episode:
    """Load a seed-format episode. Raises ValueError with the reason when it breaks the contract."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        problems = validate(f)
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        images = {}
        if with_images:
            for name, key in zip(CAMERA_NAMES, IMAGE_KEYS):
                images[name] = [bytes(np.asarray(b, dtype=np.uint8)) for b in f[key][:]]
        phase = [p.decode() if isinstance(p, bytes) else str(p) for p in f[PHASE][:]]
        mv = None
        if EXTRA_MODEL_VERSION in f:
            mv = [m.decode() if isinstance(m, bytes) else str(m) for m in f[EXTRA_MODEL_VERSION][:]]
        placeholder = {}
        if EXTRA_PLACEHOLDER in f:
            placeholder = {k: f[EXTRA_PLACEHOLDER][k][:].astype(bool) for k in f[EXTRA_PLACEHOLDER]}
        ts = f.attrs["timestamp"]
        return Episode(
            qpos=f[QPOS][:],
            action=f[ACTION][:],
            phase=phase,
            images=images,
            fps=float(f.attrs["fps"]),
            timestamp=ts.decode() if isinstance(ts, bytes) else str(ts),
            attrs={k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()},
            hand_state=f[EXTRA_HAND_STATE][:] if EXTRA_HAND_STATE in f else None,
            sample_ns=f[EXTRA_SAMPLE_TIME_NS][:] if EXTRA_SAMPLE_TIME_NS in f else None,
            model_version=mv,
            placeholder=placeholder,
        )


def write_episode(path: str | Path, ep: Episode) -> Path:
    """Write a whole in-memory episode at once (tests, generators, exports). The recorder streams instead,
    producing the same layout through ``h1_training.recording`` 's writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = ep.length
    with h5py.File(path, "w") as f:
        f.create_dataset(QPOS, data=np.asarray(ep.qpos, dtype=np.float32).reshape(t, NUM_ARM_JOINTS))
        for name, key in zip(CAMERA_NAMES, IMAGE_KEYS):
            ds = f.create_dataset(key, shape=(t,), dtype=JPEG_DTYPE)
            for i, jpeg in enumerate(ep.images.get(name, [])):
                ds[i] = np.frombuffer(jpeg, dtype=np.uint8)
        f.create_dataset(ACTION, data=np.asarray(ep.action, dtype=np.float32).reshape(t, NUM_ARM_JOINTS))
        f.create_dataset(PHASE, data=np.array(ep.phase, dtype=object), dtype=STR_DTYPE)
        if ep.hand_state is not None:
            f.create_dataset(EXTRA_HAND_STATE, data=np.asarray(ep.hand_state, np.float32).reshape(t, NUM_HAND_JOINTS))
        if ep.sample_ns is not None:
            f.create_dataset(EXTRA_SAMPLE_TIME_NS, data=np.asarray(ep.sample_ns, dtype=np.int64))
        if ep.model_version is not None:
            f.create_dataset(EXTRA_MODEL_VERSION, data=np.array(ep.model_version, dtype=object), dtype=STR_DTYPE)
        for k, v in ep.attrs.items():
            if k not in CONTRACT_ATTRS:
                f.attrs[k] = v
        f.attrs["episode_length"] = t
        f.attrs["fps"] = float(ep.fps)
        f.attrs["timestamp"] = ep.timestamp
        f.attrs["policy_frames"] = ep.policy_frames
        f.attrs["human_frames"] = ep.human_frames
        f.attrs["format_version"] = FORMAT_VERSION
    return path


def relabel(path: str | Path, success: int, note: str = "", under: str | Path | None = None) -> tuple[bool, str]:
    """Label a saved episode: ATTR_SUCCESS (and the note, LABEL_NOTE_ATTR) in its HDF5 attrs.

    ``under``: refuse a file outside that folder. Returns (ok, message); never raises for a bad path.
    """
    path = Path(path)
    if under is not None:
        try:
            path.resolve().relative_to(Path(under).resolve())
        except ValueError:
            return False, f"{path} is not an episode under {under}"
    if path.suffix != ".hdf5" or not path.is_file():
        return False, f"no saved episode at {path}"
    try:
        with h5py.File(path, "r+") as f:
            f.attrs[ATTR_SUCCESS] = int(success)
            if note:
                f.attrs[LABEL_NOTE_ATTR] = note
    except OSError as exc:
        return False, f"cannot label {path}: {exc}"
    return True, f"labeled {path.name} {'success' if success else 'failure'}"


def read_provenance(dataset_dir: str | Path) -> dict:
    """The conversion summary (PROVENANCE_FILE) of a LeRobot dataset folder; {} when there is none."""
    path = Path(dataset_dir) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
