"""The dataset catalog behind ``dataset_manager`` (no rclpy): find datasets under a few root folders, score every
episode's quality, and keep the answers cached so that a periodic refresh of an unchanged tree costs a few stats.

Datasets::

    hdf5     a ``training_session_epoch*`` folder holding ``episode_<i>.hdf5`` files (the recorder's layout), or any
             other folder holding ``episode_<i>.hdf5`` files directly (the seed client's ``epoch_N/raw``, the
             seed's converter output); every variant of the seed's HDF5 is read (``recording.reader``)
    lerobot  a folder with ``meta/info.json`` (a LeRobotDataset, e.g. from ``h1-training convert``)

Episodes are numbered 0..N-1 within a dataset (HDF5: by the file's episode number, so ``episode_0, episode_2``
are indices 0 and 1; LeRobot: its ``episode_index``). Every HDF5 file is listed, an invalid one too (score 0 with
its reason), so that the operator sees it; frames, duration, fps and success rate count valid episodes only.

Each HDF5 episode goes through ``recording.inspect.inspect_episode`` (the validator of ``h1-training inspect``;
the catalog's default ``decode="quick"`` decodes the first, middle and last frame of each camera, where a recording
cut short shows; ``h1-training inspect`` decodes 12 or every frame) and its report is turned into a 0-100 quality
score by named deductions (``score_episode``):

    deduction            when                                                   points
    contract             the inspector found a problem: unreadable file, HDF5   100 (score 0: unusable)
                         contract broken, undecodable JPEG, time going backwards
    short                shorter than ``min_duration_s`` (1 s) or < 2 frames    30
    recovered            rebuilt by the recorder's repair after a crash         10 (its end may be missing)
    missed_ticks         ticks that got no sample, share of all ticks           2 per %, at most 30
    rate                 achieved rate off the recorded fps by more than 2 %    1 per % beyond 2 %, at most 20
    stale:qpos           arm state older than stale_after_s                     1 per %, at most 25
    stale:hand_state     hand state stale                                       0.3 per %, at most 10
    placeholder:<cam>    camera missing: the recorder stored its placeholder    0.5 per %, at most 25 per camera
    stale:<cam>          camera frame repeated past stale_after_s               0.3 per %, at most 15 per camera
    missing:<cam>        the file holds no such camera (a seed variant)          25 per camera (as a camera that
                                                                                was a placeholder all along)

Shares under 1 % (the inspector's warning threshold) cost nothing. Score = max(0, 100 - sum of points). Seed
files without our timing extras are scored on what they hold. A dataset's score is the mean of its episodes'
scores; ``DatasetEntry.problems`` lists the episodes below 100, worst first, with their deductions. A LeRobot
dataset's episodes take the score, success label and problems of their source HDF5 files (named in its
``h1_conversion.json``) when those are still on disk, else -1 (not assessed).

Cache: an episode file is re-inspected only when its key (path; mtime, size, inode and ctime: a file replaced by
another with the same size and mtime still differs) changed; a file gone is dropped. A LeRobot dataset's metadata
is re-read only when one of its meta files changed. With ``index_file`` the episode cache persists in a SQLite
file (``CatalogIndex``), so a restarted dataset_manager re-reads only what changed while it was down; the index
is tied to the decode mode and quality policy (another one starts it empty), and a damaged index is set aside
and rebuilt (``index_note`` says so), never fatal.

Cold start: the files to inspect are shared among ``workers`` processes (``forkserver``, which preloads this
module: a worker starts in milliseconds and never inherits a ROS node's threads) when there are at least
``PARALLEL_MIN`` of them; fewer are inspected in the calling thread. Each file is opened once (the inspector reads
attrs, shapes, phase, extras, the model versions and the sampled camera rows in one pass).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from h1_training.recording import layout as L
from h1_training.recording.inspect import DECODE_MODES, EpisodeReport, inspect_episode
from h1_training.recording.reader import LAYOUT_OURS

FORMAT_HDF5 = "hdf5"
FORMAT_LEROBOT = "lerobot"
LEROBOT_INFO = Path("meta") / "info.json"
LEROBOT_EPISODES = Path("meta") / "episodes"
NOT_ASSESSED = -1.0
MAX_DATASET_PROBLEMS = 20
PARALLEL_MIN = 32          # files to inspect before a refresh shares them among worker processes
INDEX_VERSION = 1          # of CatalogIndex's schema and EpisodeEntry's fields
StatKey = tuple[int, int, int, int]  # (mtime_ns, size, inode, ctime_ns)


# --- quality ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QualityPolicy:
    """Weights of the deductions (see the module doc). Shares are fractions 0..1; ``per_pct`` is points per 1 %."""

    min_duration_s: float = 1.0
    short_points: float = 30.0
    recovered_points: float = 10.0
    min_share: float = 0.01               # the inspector's warn_share: below it nothing is deducted
    missed_per_pct: float = 2.0
    missed_max: float = 30.0
    rate_tolerance: float = 0.02
    rate_per_pct: float = 1.0
    rate_max: float = 20.0
    stale_qpos_per_pct: float = 1.0
    stale_qpos_max: float = 25.0
    stale_hand_per_pct: float = 0.3
    stale_hand_max: float = 10.0
    placeholder_per_pct: float = 0.5
    placeholder_max: float = 25.0
    stale_cam_per_pct: float = 0.3
    stale_cam_max: float = 15.0


@dataclass(frozen=True)
class Deduction:
    name: str        # "contract", "short", "recovered", "missed_ticks", "rate", "stale:<src>", "placeholder:<cam>"
    points: float
    reason: str

    def line(self) -> str:
        return f"-{self.points:.0f} {self.name}: {self.reason}"


def _share_points(share: float | None, per_pct: float, cap: float, policy: QualityPolicy) -> float:
    if share is None or share < policy.min_share:
        return 0.0
    return min(cap, per_pct * share * 100.0)


def score_episode(rep: EpisodeReport, policy: QualityPolicy = QualityPolicy()) -> tuple[float, list[Deduction]]:
    """0-100 quality of one inspected episode and the named deductions that explain it (biggest first)."""
    if rep.problems:
        return 0.0, [Deduction("contract", 100.0, "; ".join(rep.problems))]
    out: list[Deduction] = []
    if rep.frames < 2 or rep.duration_s < policy.min_duration_s:
        out.append(Deduction("short", policy.short_points,
                             f"{rep.frames} frames, {rep.duration_s:.2f} s (< {policy.min_duration_s:g} s)"))
    if rep.recovered:
        out.append(Deduction("recovered", policy.recovered_points,
                             f"repaired after a crash, its end may be missing ({rep.recovered_reason})"))
    if rep.missed_ticks:
        share = rep.missed_ticks / (rep.frames + rep.missed_ticks)
        pts = _share_points(share, policy.missed_per_pct, policy.missed_max, policy)
        if pts:
            out.append(Deduction("missed_ticks", pts, f"{rep.missed_ticks} of {rep.frames + rep.missed_ticks} "
                                 f"ticks got no sample ({share:.1%})"))
    if rep.achieved_rate_hz is not None and rep.fps > 0:
        off = abs(rep.achieved_rate_hz - rep.fps) / rep.fps
        if off > policy.rate_tolerance:
            pts = min(policy.rate_max, policy.rate_per_pct * (off - policy.rate_tolerance) * 100.0)
            out.append(Deduction("rate", pts, f"achieved {rep.achieved_rate_hz:.1f} Hz for {rep.fps:g} Hz "
                                 f"recorded ({off:.0%} off)"))
    for src, per_pct, cap in (("qpos", policy.stale_qpos_per_pct, policy.stale_qpos_max),
                              ("hand_state", policy.stale_hand_per_pct, policy.stale_hand_max)):
        share = rep.stale_share.get(src)
        pts = _share_points(share, per_pct, cap, policy)
        if pts:
            out.append(Deduction(f"stale:{src}", pts, f"{share:.0%} of samples stale"))
    for cam, cr in rep.cameras.items():
        if not cr.recorded:
            out.append(Deduction(f"missing:{cam}", policy.placeholder_max,
                                 "not recorded in this file (black frames when converted)"))
            continue
        pts = _share_points(cr.placeholder_share, policy.placeholder_per_pct, policy.placeholder_max, policy)
        if pts:
            out.append(Deduction(f"placeholder:{cam}", pts,
                                 f"{cr.placeholder_share:.0%} placeholder frames (camera missing)"))
        pts = _share_points(cr.stale_share, policy.stale_cam_per_pct, policy.stale_cam_max, policy)
        if pts:
            out.append(Deduction(f"stale:{cam}", pts, f"{cr.stale_share:.0%} stale frames"))
    out.sort(key=lambda d: -d.points)
    return max(0.0, round(100.0 - sum(d.points for d in out), 1)), out


# --- entries ------------------------------------------------------------------------------------------------
@dataclass
class EpisodeEntry:
    index: int                      # 0..N-1 within its dataset
    path: str                       # the HDF5 file (for a LeRobot episode: its source file, "" if unknown)
    valid: bool
    frames: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    policy_frames: int = 0
    human_frames: int = 0
    missed_ticks: int = 0
    success: int = -1               # -1 unknown, 0 failed, 1 succeeded
    recovered: bool = False
    quality: float = NOT_ASSESSED   # 0..100, -1 not assessed
    model_version: str = ""         # the model(s) that drove its policy frames, comma-separated
    variant: str = ""               # reader.Variant.describe(): "h1_training layout, ego_cam JPEG", ...
    deductions: list[Deduction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts that cost nothing (e.g. source not found)
    stat_key: StatKey | None = None                 # file_key() of the file when inspected

    @property
    def name(self) -> str:
        return Path(self.path).name if self.path else f"episode {self.index}"

    @property
    def problems(self) -> list[str]:
        return [d.line() for d in self.deductions] + self.notes


@dataclass
class DatasetEntry:
    name: str
    path: str
    format: str                     # FORMAT_HDF5 or FORMAT_LEROBOT
    created_ns: int                 # oldest file's mtime (wall clock, ns)
    size_bytes: int
    episodes: list[EpisodeEntry]
    fps: float = 0.0
    partials: list[str] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    declared_frames: int | None = None  # LeRobot's info.json total, when per-episode lengths could not be read

    @property
    def valid_episodes(self) -> list[EpisodeEntry]:
        return [e for e in self.episodes if e.valid]

    @property
    def variants(self) -> dict[str, int]:
        """reader.Variant.describe() -> number of episodes in it."""
        return dict(Counter(e.variant for e in self.episodes if e.variant))

    @property
    def total_frames(self) -> int:
        if self.declared_frames is not None:
            return self.declared_frames
        return sum(e.frames for e in self.valid_episodes)

    @property
    def duration_s(self) -> float:
        if self.declared_frames is not None:
            return self.declared_frames / self.fps if self.fps > 0 else 0.0
        return sum(e.duration_s for e in self.valid_episodes)

    @property
    def success_rate(self) -> float:
        """Share of successes over valid episodes labelled 0 or 1; -1 if none is labelled."""
        labelled = [e.success for e in self.valid_episodes if e.success in (0, 1)]
        return sum(labelled) / len(labelled) if labelled else -1.0

    @property
    def quality(self) -> float:
        """Mean episode score (invalid ones count 0); -1 when no episode could be assessed."""
        scores = [e.quality for e in self.episodes if e.quality >= 0]
        return round(sum(scores) / len(scores), 1) if scores else NOT_ASSESSED

    @property
    def problems(self) -> list[str]:
        """Why the score is below 100: episodes worst first, then dataset-level notes."""
        bad = sorted((e for e in self.episodes if 0 <= e.quality < 100), key=lambda e: (e.quality, e.index))
        lines = [f"{e.name}: {e.quality:.0f} ({'; '.join(e.problems)})" for e in bad]
        if len(lines) > MAX_DATASET_PROBLEMS:
            lines = lines[:MAX_DATASET_PROBLEMS] + [f"... and {len(lines) - MAX_DATASET_PROBLEMS} more episodes "
                                                    "below 100"]
        unassessed = sum(1 for e in self.episodes if e.quality < 0)
        if unassessed:
            lines.append(f"{unassessed} episode(s) not assessed (source HDF5 files not found)")
        return lines + self.notes


# --- helpers ------------------------------------------------------------------------------------------------
def file_key(path: Path) -> StatKey | None:
    """(mtime_ns, size, inode, ctime_ns) of a file, None when it is gone: what the cache and the export compare.
    The inode and ctime catch a file replaced by one of the same size and mtime (``cp -p``, ``os.replace``)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def inspect_entry(path: str | Path, decode: str = "quick", policy: QualityPolicy = QualityPolicy(),
                  key: StatKey | None = None) -> EpisodeEntry:
    """One HDF5 episode inspected and scored (index 0): the catalog's unit of work, in a worker process or not.
    ``key``: the file's ``file_key`` taken before reading (a change while reading shows at the next refresh)."""
    path = Path(path)
    if key is None:
        key = file_key(path)
    rep = inspect_episode(path, decode=decode)
    score, deductions = score_episode(rep, policy)
    return EpisodeEntry(
        index=0, path=str(path), valid=rep.valid, frames=rep.frames if rep.valid else 0,
        duration_s=rep.duration_s if rep.valid else 0.0, fps=rep.fps, policy_frames=rep.policy_frames,
        human_frames=rep.human_frames, missed_ticks=rep.missed_ticks or 0,
        success=rep.success if rep.success in (0, 1) else -1, recovered=rep.recovered, quality=score,
        model_version=",".join(rep.model_versions) if rep.valid else "", deductions=deductions, stat_key=key,
        variant=rep.variant,
        notes=[f"seed variant: {rep.variant}"] if rep.variant and not rep.variant.startswith(LAYOUT_OURS) else [],
    )


def _inspect_batch(items: list[tuple[str, StatKey | None]], decode: str,
                   policy: QualityPolicy) -> tuple[list[EpisodeEntry], float]:
    """The entries and the CPU seconds they cost (of the process that inspected them)."""
    cpu = time.process_time()
    return [inspect_entry(p, decode, policy, k) for p, k in items], time.process_time() - cpu


def default_workers() -> int:
    """Worker processes for a cold refresh: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def inspect_many(items: list[tuple[str, StatKey | None]], decode: str, policy: QualityPolicy,
                 workers: int) -> tuple[list[EpisodeEntry], float]:
    """``inspect_entry`` over many files, shared among ``workers`` processes when there are enough of them; with
    the CPU seconds spent inspecting, all processes together."""
    if workers <= 1 or len(items) < PARALLEL_MIN:
        return _inspect_batch(items, decode, policy)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])  # numpy, h5py, OpenCV imported once, in the server
    chunks = [items[i::workers * 4] for i in range(workers * 4)]  # interleaved: big sessions spread evenly
    by_path: dict[str, EpisodeEntry] = {}
    cpu = 0.0
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for batch, spent in pool.map(_inspect_batch, chunks, [decode] * len(chunks), [policy] * len(chunks)):
            by_path.update((e.path, e) for e in batch)
            cpu += spent
    return [by_path[p] for p, _ in items], cpu


def _entry_from_dict(d: dict) -> EpisodeEntry:
    d = dict(d)
    d["deductions"] = [Deduction(**x) for x in d.get("deductions", [])]
    d["stat_key"] = tuple(d["stat_key"]) if d.get("stat_key") is not None else None
    return EpisodeEntry(**d)


class CatalogIndex:
    """The episode cache on disk (SQLite): path -> entry with its file key. Tied to a ``signature`` (schema version,
    decode mode, quality policy): opened with another, it starts empty. A file that is not a readable index is
    renamed ``<name>.corrupt-<time>`` and a new one is started; ``note`` says so."""

    def __init__(self, path: str | Path, signature: str) -> None:
        self.path = Path(path)
        self.signature = signature
        self.note = ""

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=10.0)
        con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        con.execute("CREATE TABLE IF NOT EXISTS episodes (path TEXT PRIMARY KEY, entry TEXT NOT NULL)")
        row = con.execute("SELECT value FROM meta WHERE key = 'signature'").fetchone()
        if row is None or row[0] != self.signature:
            with con:
                con.execute("DELETE FROM episodes")
                con.execute("INSERT OR REPLACE INTO meta VALUES ('signature', ?)", (self.signature,))
        return con

    def _set_aside(self, exc: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            self.path.replace(aside)
            self.note = f"catalog index {self.path} was unreadable ({exc}); set aside as {aside.name}, rebuilt"
        except OSError as move_exc:
            self.note = f"catalog index {self.path} is unreadable ({exc}) and could not be moved ({move_exc})"

    def load(self) -> dict[str, EpisodeEntry]:
        for attempt in range(2):
            try:
                con = self._connect()
                try:
                    rows = con.execute("SELECT path, entry FROM episodes").fetchall()
                finally:
                    con.close()
                out = {}
                for path, text in rows:
                    try:
                        out[path] = _entry_from_dict(json.loads(text))
                    except (ValueError, TypeError) as exc:  # one bad row: that file is read again
                        self.note = self.note or f"catalog index: a damaged row was dropped ({exc})"
                return out
            except sqlite3.DatabaseError as exc:
                if attempt or not self.path.exists():
                    self.note = f"catalog index {self.path} not usable: {exc}"
                    return {}
                self._set_aside(exc)
        return {}

    def save(self, upsert: list[EpisodeEntry], delete: list[str]) -> None:
        """Write the entries inspected and forget the files gone, in one transaction."""
        if not upsert and not delete:
            return
        try:
            con = self._connect()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            con = self._connect()
        try:
            with con:
                con.executemany("DELETE FROM episodes WHERE path = ?", [(p,) for p in delete])
                con.executemany("INSERT OR REPLACE INTO episodes VALUES (?, ?)",
                                [(e.path, json.dumps(dataclasses.asdict(e))) for e in upsert])
        finally:
            con.close()


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _episode_sort_key(path: Path) -> tuple:
    idx = L.episode_index_of(path)
    return (idx if idx is not None else 1 << 30, path.name)


def _files_under(folder: Path) -> list[os.stat_result]:
    out = []
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                out.append(os.stat(os.path.join(dirpath, name)))
            except OSError:
                pass
    return out


def _is_session_dir(path: Path) -> bool:
    return path.name.startswith(L.SESSION_PREFIX)


def _holds_episodes(path: Path) -> bool:
    return any(path.glob(L.EPISODE_GLOB))


def _is_lerobot_dir(path: Path) -> bool:
    return (path / LEROBOT_INFO).is_file()


# --- the catalog --------------------------------------------------------------------------------------------
@dataclass
class RefreshStats:
    datasets: int = 0
    episodes: int = 0
    inspected: int = 0        # episode files inspected in this refresh (the rest came from the cache)
    parallel: int = 0         # worker processes that shared them (0: inspected in the calling thread)
    inspect_cpu_s: float = 0.0  # CPU seconds the inspection cost, every process together
    lerobot_read: int = 0     # LeRobot datasets whose metadata was read again
    missing_roots: list[str] = field(default_factory=list)


class Catalog:
    """Datasets under ``roots`` (thread-safe: ``refresh`` runs one at a time, readers see the last snapshot)."""

    def __init__(self, roots: Sequence[str | Path], decode: str = "quick",
                 policy: QualityPolicy = QualityPolicy(), max_depth: int = 6,
                 index_file: str | Path | None = None, workers: int = 0) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}; got {decode!r}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per CPU, at most 8); got {workers}")
        self.roots = [Path(r) for r in roots]
        self.decode = decode
        self.policy = policy
        self.max_depth = max_depth
        self.workers = workers or default_workers()
        self._episodes: dict[str, EpisodeEntry] = {}   # path -> entry (with stat_key)
        self.index: CatalogIndex | None = None
        if index_file:
            signature = json.dumps([INDEX_VERSION, decode, dataclasses.asdict(policy)], sort_keys=True)
            self.index = CatalogIndex(index_file, signature)
            self._episodes = self.index.load()
        self._lerobot: dict[str, tuple[tuple, dict]] = {}  # path -> (meta stat keys, parsed meta)
        self._inline: dict[str, EpisodeEntry] = {}     # inspected while building datasets (index them too)
        self._lock = threading.Lock()
        self.datasets: list[DatasetEntry] = []
        self.last: RefreshStats = RefreshStats()

    def set_roots(self, roots: Sequence[str | Path]) -> None:
        with self._lock:
            self.roots = [Path(r) for r in roots]

    def find(self, name_or_path: str) -> DatasetEntry | None:
        """A dataset of the last refresh by name, or by its path (as given or resolved)."""
        snapshot = self.datasets
        for ds in snapshot:
            if name_or_path in (ds.name, ds.path):
                return ds
        try:
            wanted = str(Path(name_or_path).resolve())
        except (OSError, RuntimeError):
            return None
        return next((ds for ds in snapshot if str(Path(ds.path).resolve()) == wanted), None)

    @property
    def index_note(self) -> str:
        return self.index.note if self.index is not None else ""

    # --- scanning -------------------------------------------------------------------------------------------
    def refresh(self) -> list[DatasetEntry]:
        with self._lock:
            stats = RefreshStats()
            found: list[tuple[Path, Path, str]] = []  # (root, folder, format)
            for root in self.roots:
                if not root.is_dir():
                    stats.missing_roots.append(str(root))
                    continue
                found.extend((root, folder, fmt) for folder, fmt in self._walk(root))
            fresh = self._inspect_changed(found, stats)
            seen_files: set[str] = set()
            datasets: list[DatasetEntry] = []
            names: set[str] = set()
            for root, folder, fmt in found:
                name = self._name(root, folder, names)
                names.add(name)
                if fmt == FORMAT_HDF5:
                    ds = self._hdf5_dataset(name, folder, stats, seen_files)
                else:
                    ds = self._lerobot_dataset(name, folder, stats, seen_files)
                if ds is not None:
                    datasets.append(ds)
            # forget what is gone, so the cache does not grow without bound
            gone = [p for p in self._episodes if p not in seen_files]
            self._episodes = {p: e for p, e in self._episodes.items() if p in seen_files}
            if self.index is not None:
                fresh.update((p, e) for p, e in self._inline.items() if p in self._episodes)
                try:
                    self.index.save([e for p, e in fresh.items() if self._episodes.get(p) is e], gone)
                except (OSError, sqlite3.Error) as exc:  # the catalog works without its index
                    self.index.note = f"catalog index {self.index.path} not written: {exc}"
            self._inline = {}
            live = {ds.path for ds in datasets}
            self._lerobot = {p: v for p, v in self._lerobot.items() if p in live}
            stats.datasets = len(datasets)
            stats.episodes = sum(len(ds.episodes) for ds in datasets)
            self.datasets = datasets
            self.last = stats
            return datasets

    def _walk(self, root: Path) -> list[tuple[Path, str]]:
        """Dataset folders under ``root`` (root included), in natural order; hidden folders are skipped."""
        out: list[tuple[Path, str]] = []

        def visit(folder: Path, depth: int) -> None:
            if _is_lerobot_dir(folder):
                out.append((folder, FORMAT_LEROBOT))
                return
            if _is_session_dir(folder):
                if any(folder.glob(L.EPISODE_GLOB + "*")):
                    out.append((folder, FORMAT_HDF5))
                return
            if _holds_episodes(folder):  # a seed folder (epoch_N/raw, a converter's output) or any other
                out.append((folder, FORMAT_HDF5))
                return
            if depth >= self.max_depth:
                return
            try:
                children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                  key=lambda p: _natural_key(p.name))
            except OSError:
                return
            for child in children:
                visit(child, depth + 1)

        visit(root, 0)
        return out

    @staticmethod
    def _name(root: Path, folder: Path, taken: set[str]) -> str:
        rel = folder.relative_to(root).as_posix()
        name = folder.name if rel == "." else rel
        if name in taken:
            name = f"{root.name}/{name}"
        return name if name not in taken else str(folder)

    def _inspect_changed(self, found: list[tuple[Path, Path, str]], stats: RefreshStats) -> dict[str, EpisodeEntry]:
        """Inspect, all at once (in worker processes when there are many), the episode files of ``found`` that
        are new or changed since the cache saw them; the datasets are then built from the cache."""
        todo: list[tuple[str, StatKey | None]] = []
        for _root, folder, fmt in found:
            if fmt == FORMAT_HDF5:
                paths = list(folder.glob(L.EPISODE_GLOB))
            else:
                paths = [Path(s) for s in self._lerobot_meta(folder, stats)["sources"] if s]
            for path in paths:
                key = file_key(path)
                cached = self._episodes.get(str(path))
                if key is not None and (cached is None or cached.stat_key != key):
                    todo.append((str(path), key))
        todo = list(dict.fromkeys(todo))
        if not todo:
            return {}
        parallel = self.workers > 1 and len(todo) >= PARALLEL_MIN
        entries, stats.inspect_cpu_s = inspect_many(todo, self.decode, self.policy, self.workers if parallel else 1)
        stats.inspected += len(entries)
        stats.parallel = self.workers if parallel else 0
        fresh = {e.path: e for e in entries}
        self._episodes.update(fresh)
        return fresh

    def _episode(self, path: Path, index: int, stats: RefreshStats) -> EpisodeEntry:
        """One HDF5 episode, inspected only when its file key changed since the cached one."""
        key = file_key(path)
        cached = self._episodes.get(str(path))
        if cached is not None and key is not None and cached.stat_key == key:
            return dataclasses.replace(cached, index=index)  # one object per dataset list: indices differ
        stats.inspected += 1  # changed since _inspect_changed looked (or gone): read it now
        entry = inspect_entry(path, self.decode, self.policy, key)
        self._episodes[str(path)] = entry
        self._inline[str(path)] = entry
        return dataclasses.replace(entry, index=index)

    def _hdf5_dataset(self, name: str, folder: Path, stats: RefreshStats, seen: set[str]) -> DatasetEntry:
        files = sorted(folder.glob(L.EPISODE_GLOB), key=_episode_sort_key)
        episodes = []
        for i, path in enumerate(files):
            seen.add(str(path))
            episodes.append(self._episode(path, i, stats))
        stat_list = _files_under(folder)
        ds = DatasetEntry(
            name=name, path=str(folder), format=FORMAT_HDF5,
            created_ns=min((s.st_mtime_ns for s in stat_list), default=0),
            size_bytes=sum(s.st_size for s in stat_list), episodes=episodes,
            partials=sorted(str(p) for p in folder.glob(L.EPISODE_GLOB + L.PARTIAL_SUFFIX)),
            unrecoverable=sorted(str(p) for p in folder.glob("episode_*" + L.UNRECOVERABLE_SUFFIX)),
        )
        rates = Counter(e.fps for e in ds.valid_episodes)
        if rates:
            ds.fps = rates.most_common(1)[0][0]
            if len(rates) > 1:
                ds.notes.append("mixed rates: " + ", ".join(f"{r:g} Hz ({n})" for r, n in rates.most_common()))
        if ds.partials:
            ds.notes.append(f"{len(ds.partials)} unsaved episode file(s) (*.partial: being recorded now, or left "
                            "by a crash and repaired at the recorder's next start)")
        if ds.unrecoverable:
            ds.notes.append(f"{len(ds.unrecoverable)} unrecoverable file(s) kept as *.unrecoverable")
        seed = {v: n for v, n in ds.variants.items() if not v.startswith(LAYOUT_OURS)}
        if seed:
            ds.notes.append("read from the seed's variants (h1-training import-seed brings them into our layout): "
                            + "; ".join(f"{v} ({n})" for v, n in seed.items()))
        return ds

    def _lerobot_meta(self, folder: Path, stats: RefreshStats) -> dict:
        meta_files = [folder / LEROBOT_INFO, folder / L.PROVENANCE_FILE]
        meta_files += sorted((folder / LEROBOT_EPISODES).rglob("*.parquet"))
        key = tuple((str(p), file_key(p)) for p in meta_files)
        cached = self._lerobot.get(str(folder))
        if cached is not None and cached[0] == key:
            return cached[1]
        stats.lerobot_read += 1
        meta: dict = {"notes": []}
        try:
            info = json.loads((folder / LEROBOT_INFO).read_text())
        except (OSError, ValueError) as exc:
            info = {}
            meta["notes"].append(f"meta/info.json unreadable: {exc}")
        meta["fps"] = float(info.get("fps") or 0.0)
        meta["total_episodes"] = int(info.get("total_episodes") or 0)
        meta["total_frames"] = int(info.get("total_frames") or 0)
        meta["lengths"] = self._lerobot_lengths(meta_files[2:], meta)
        meta["sources"] = list(L.read_provenance(folder).get("sources") or [])
        self._lerobot[str(folder)] = (key, meta)
        return meta

    @staticmethod
    def _lerobot_lengths(parquets: list[Path], meta: dict) -> dict[int, int]:
        """episode_index -> frames, from meta/episodes/*.parquet (needs pyarrow, which LeRobot brings)."""
        if not parquets:
            return {}
        try:
            import pyarrow.parquet as pq
        except ImportError:
            meta["notes"].append("per-episode lengths not read (pyarrow not installed)")
            return {}
        lengths: dict[int, int] = {}
        for p in parquets:
            try:
                table = pq.read_table(p, columns=["episode_index", "length"])
            except Exception as exc:  # noqa: BLE001 - a damaged meta file is a finding, not a crash
                meta["notes"].append(f"{p.name} unreadable: {exc}")
                continue
            for row in table.to_pylist():
                lengths[int(row["episode_index"])] = int(row["length"])
        return lengths

    def _lerobot_dataset(self, name: str, folder: Path, stats: RefreshStats, seen: set[str]) -> DatasetEntry:
        meta = self._lerobot_meta(folder, stats)
        fps = meta["fps"]
        n = max(meta["total_episodes"], len(meta["lengths"]))
        episodes = []
        for i in range(n):
            frames = meta["lengths"].get(i, 0)
            source = meta["sources"][i] if i < len(meta["sources"]) else ""
            src = Path(source) if source else None
            if src is not None and src.is_file():
                seen.add(str(src))
                s = self._episode(src, i, stats)
                ep = EpisodeEntry(index=i, path=s.path, valid=True, frames=frames or s.frames,
                                  duration_s=(frames / fps) if frames and fps else s.duration_s, fps=fps,
                                  policy_frames=s.policy_frames, human_frames=s.human_frames,
                                  missed_ticks=s.missed_ticks, success=s.success, recovered=s.recovered,
                                  quality=s.quality, model_version=s.model_version, deductions=list(s.deductions))
            else:
                ep = EpisodeEntry(index=i, path=source, valid=True, frames=frames,
                                  duration_s=frames / fps if fps else 0.0, fps=fps,
                                  notes=["source episode not found: quality and success not assessed"])
            episodes.append(ep)
        stat_list = _files_under(folder)
        ds = DatasetEntry(name=name, path=str(folder), format=FORMAT_LEROBOT,
                          created_ns=min((s.st_mtime_ns for s in stat_list), default=0),
                          size_bytes=sum(s.st_size for s in stat_list), episodes=episodes, fps=fps,
                          notes=list(meta["notes"]))
        if not meta["lengths"]:
            ds.declared_frames = meta["total_frames"]
        return ds
