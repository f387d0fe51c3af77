"""Export a catalogued dataset into a new folder (no rclpy); never overwrites anything.

    "hdf5"     a copy of the dataset's valid episodes, as ``<out>/<session folder>/episode_<i>.hdf5`` (names kept,
               so ``h1-training convert <out>`` and the catalog read it like the original), plus ``h1_export.json``
               (source, copied and skipped episodes with reasons). Copied into a hidden folder beside ``<out>``
               and renamed at the end: an interrupted export never leaves a half dataset under ``<out>``.
    "mcap"     each valid episode as ``<out>/<session folder>/episode_<i>.mcap`` with ROS 2 JointState and
               CompressedImage messages (``datasets/mcap_export.py``), so Foxglove replays it with the images;
               same manifest, same hidden-folder-then-rename.
    "lerobot"  an HDF5 dataset's valid episodes converted with ``training.convert.convert_sessions`` (needs the
               ``train`` extras), also in a hidden folder renamed at the end; a LeRobot dataset is copied as it is.
    "seed"     an HDF5 dataset's valid episodes in the variant the seed's ``convert_h1_data_to_lerobot.py`` reads
               (``ego_cam`` as raw RGB arrays; ``recording.seed.write_seed_episode``), as
               ``<out>/<session folder>/episode_<i>.hdf5`` plus ``seed_export.json``, every frame verified; also
               staged in a hidden folder renamed at the end.

``<out>`` must not exist, or be an empty folder. ``ExportJob`` runs one export at a time in a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from h1_training.datasets.catalog import FORMAT_HDF5, FORMAT_LEROBOT, DatasetEntry, file_key
from h1_training.datasets.mcap_export import export_episode_mcap
from h1_training.recording.layout import PROVENANCE_FILE
from h1_training.recording.seed import export_seed
from h1_training.training.convert import convert_sessions

FORMAT_SEED = "seed"
FORMAT_MCAP = "mcap"
FORMATS = (FORMAT_LEROBOT, FORMAT_HDF5, FORMAT_SEED, FORMAT_MCAP)
MANIFEST = "h1_export.json"


@dataclass
class ExportResult:
    ok: bool
    message: str
    output_path: str = ""
    episodes: int = 0
    frames: int = 0
    skipped: list[dict] = field(default_factory=list)   # {"path": ..., "reason": ...}


class ExportCancelled(Exception):
    pass


def default_output(export_dir: str | Path, dataset: DatasetEntry, fmt: str, now: float | None = None) -> Path:
    """``export_dir/<dataset name>_<format>_<YYYYmmdd-HHMMSS>`` (the name made safe for a folder)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset.name).strip("_") or "dataset"
    return Path(export_dir) / f"{safe}_{fmt}_{stamp}"


def contained_output(export_dir: str | Path, output_path: str) -> tuple[Path | None, str]:
    """Where an export asked for ``output_path`` may write: inside ``export_dir`` only (a service caller must not
    be able to write anywhere the node can). A relative path is taken under ``export_dir``; an absolute one must
    lie inside it. ``..`` and symlinks are resolved first, so neither can lead out. Returns (path, "") or
    (None, why)."""
    root = Path(export_dir).resolve()
    asked = Path(output_path)
    candidate = asked if asked.is_absolute() else root / asked
    resolved = candidate.resolve()  # follows the symlinks that exist, collapses ".."
    if resolved == root or root not in resolved.parents:
        return None, (f"output_path {output_path!r} is outside the export folder {root} (export_dir); give a "
                      "folder name inside it, or leave output_path empty for a new one")
    return resolved, ""


def check_request(dataset: DatasetEntry, fmt: str, output: Path) -> str | None:
    """Why this export cannot run (None when it can); checked before any file is written."""
    if fmt not in FORMATS:
        return f"format must be one of {', '.join(FORMATS)}; got {fmt!r}"
    if fmt in (FORMAT_HDF5, FORMAT_SEED, FORMAT_MCAP) and dataset.format != FORMAT_HDF5:
        return f"{dataset.name} is a LeRobot dataset; it can be exported as lerobot (a copy), not as {fmt}"
    if dataset.format == FORMAT_HDF5 and not dataset.valid_episodes:
        return f"{dataset.name} has no valid episode to export ({len(dataset.episodes)} file(s), all invalid)"
    if output.is_symlink() or output.is_file():
        return f"{output} exists and is not a folder; nothing was overwritten"
    if output.is_dir() and any(output.iterdir()):
        return f"{output} exists and is not empty; choose another output_path (nothing was overwritten)"
    src, out = Path(dataset.path).resolve(), output.resolve()
    if out == src or src in out.parents:
        return f"{output} is inside the dataset being exported"
    return None


def export_dataset(dataset: DatasetEntry, fmt: str, output: str | Path, *, workers: int = 2,
                   cancel: threading.Event | None = None, log: Callable[[str], None] = lambda _m: None
                   ) -> ExportResult:
    """Export ``dataset`` as ``fmt`` into ``output`` (see the module doc). Returns a result, never raises for a
    refused or failed export: ``message`` says why."""
    output = Path(output)
    reason = check_request(dataset, fmt, output)
    if reason:
        return ExportResult(False, reason)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if dataset.format == FORMAT_LEROBOT:
            return _copy_tree(dataset, output, cancel)
        if fmt in (FORMAT_HDF5, FORMAT_MCAP):
            return _copy_hdf5(dataset, output, cancel, log, fmt)
        if fmt == FORMAT_SEED:
            return _export_seed(dataset, output, cancel, log)
        return _convert(dataset, output, workers)
    except ExportCancelled:
        return ExportResult(False, "export cancelled (node stopping); nothing was left under the output path")
    except OSError as exc:
        return ExportResult(False, f"export failed: {exc.strerror or exc} ({exc.filename or output})")


def _staging(output: Path) -> Path:
    return output.parent / f".{output.name}.exporting-{os.getpid()}"


def _publish(staging: Path, output: Path) -> None:
    if output.is_dir():
        output.rmdir()  # empty (checked): rename cannot replace a folder
    os.rename(staging, output)


def _copy_hdf5(dataset: DatasetEntry, output: Path, cancel: threading.Event | None,
               log: Callable[[str], None], fmt: str = FORMAT_HDF5) -> ExportResult:
    staging = _staging(output)
    session = staging / Path(dataset.path).name
    session.mkdir(parents=True)
    copied: list[str] = []
    skipped = [{"path": e.path, "reason": "; ".join(e.problems) or "invalid"} for e in dataset.episodes
               if not e.valid]
    frames = 0
    try:
        for ep in dataset.valid_episodes:
            if cancel is not None and cancel.is_set():
                raise ExportCancelled()
            src = Path(ep.path)
            if file_key(src) != ep.stat_key:  # the catalog's verdict is about another version of the file
                skipped.append({"path": ep.path, "reason": "changed or removed since the last refresh"})
                continue
            if fmt == FORMAT_MCAP:
                dst = session / (src.stem + ".mcap")
                try:
                    export_episode_mcap(src, dst)
                except ValueError as exc:
                    skipped.append({"path": ep.path, "reason": str(exc)})
                    continue
            else:
                dst = session / src.name
                shutil.copy2(src, dst)
                if dst.stat().st_size != src.stat().st_size:
                    raise OSError(f"copy of {src} is incomplete")
            copied.append(str(dst.relative_to(staging)))
            frames += ep.frames
            log(f"export: copied {src.name} ({len(copied)}/{len(dataset.valid_episodes)})")
        if not copied:
            raise OSError("no episode could be copied: " + "; ".join(s["reason"] for s in skipped[:3]))
        manifest = {"source": dataset.path, "format": fmt, "episodes": copied, "frames": frames,
                    "skipped": skipped, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    msg = f"exported {len(copied)} of {len(dataset.episodes)} episode(s), {frames} frames, as {fmt} to {output}"
    if skipped:
        msg += f"; skipped {len(skipped)}: " + "; ".join(f"{Path(s['path']).name} ({s['reason']})"
                                                          for s in skipped[:5])
    return ExportResult(True, msg, str(output), len(copied), frames, skipped)


def _export_seed(dataset: DatasetEntry, output: Path, cancel: threading.Event | None,
                 log: Callable[[str], None]) -> ExportResult:
    staging = _staging(output)
    skipped = [{"path": e.path, "reason": "; ".join(e.problems) or "invalid"} for e in dataset.episodes
               if not e.valid]
    sources = []
    for ep in dataset.valid_episodes:
        if file_key(Path(ep.path)) != ep.stat_key:
            skipped.append({"path": ep.path, "reason": "changed or removed since the last refresh"})
        else:
            sources.append(Path(ep.path))
    try:
        staging.mkdir(parents=True)
        report = export_seed(sources, staging, log=log, cancel=cancel)
        if cancel is not None and cancel.is_set():
            raise ExportCancelled()
        skipped += [{"path": p, "reason": why} for p, why in report.skipped.items()]
        if not report.done:
            raise OSError("no episode could be exported: " + "; ".join(s["reason"] for s in skipped[:3]))
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    frames = sum(d.frames for d in report.done)
    msg = (f"exported {len(report.done)} of {len(dataset.episodes)} episode(s), {frames} frames, in the seed "
           f"converter's variant (ego_cam raw RGB) to {output}")
    if skipped:
        msg += f"; skipped {len(skipped)}: " + "; ".join(f"{Path(s['path']).name} ({s['reason']})"
                                                          for s in skipped[:5])
    return ExportResult(True, msg, str(output), len(report.done), frames, skipped)


def _copy_tree(dataset: DatasetEntry, output: Path, cancel: threading.Event | None) -> ExportResult:
    staging = _staging(output)
    try:
        shutil.copytree(dataset.path, staging, symlinks=True)
        if cancel is not None and cancel.is_set():
            raise ExportCancelled()
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(True, f"copied LeRobot dataset {dataset.name} ({len(dataset.episodes)} episode(s)) to "
                        f"{output}", str(output), len(dataset.episodes), dataset.total_frames)


def _convert(dataset: DatasetEntry, output: Path, workers: int) -> ExportResult:
    try:
        import lerobot  # noqa: F401 - fail early with the reason instead of deep inside the conversion
    except ImportError as exc:
        return ExportResult(False, f"lerobot export needs the train extras (pip install -e '.[train]'): {exc}")
    staging = _staging(output)  # hidden from the catalog until complete (it would list a half dataset)
    sources = [Path(e.path) for e in dataset.valid_episodes]
    try:
        summary = convert_sessions(sources, staging, workers=workers, progress=False)
        if summary.episodes:
            _publish(staging, output)
            _point_provenance_at(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    skipped = [{"path": e.path, "reason": "; ".join(e.problems) or "invalid"} for e in dataset.episodes
               if not e.valid] + [asdict(s) for s in summary.skipped]
    if not summary.episodes:
        return ExportResult(False, "no episode could be converted: " + "; ".join(
            f"{Path(s['path']).name} ({s['reason']})" for s in skipped[:5]), skipped=skipped)
    msg = (f"exported {summary.episodes} of {len(dataset.episodes)} episode(s), {summary.frames} frames at "
           f"{summary.fps} fps, as a LeRobot dataset to {output}")
    if skipped:
        msg += f"; skipped {len(skipped)}: " + "; ".join(f"{Path(s['path']).name} ({s['reason']})"
                                                          for s in skipped[:5])
    return ExportResult(True, msg, str(output), summary.episodes, summary.frames, skipped)


def _point_provenance_at(output: Path) -> None:
    """The conversion summary names the folder it was written to (the staging one): name the final one."""
    path = output / PROVENANCE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    data["out_dir"] = str(output)
    path.write_text(json.dumps(data, indent=2))


class ExportJob:
    """At most one export at a time, run in a worker thread. ``start`` refuses a second one with the reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._what = ""
        self._started = 0.0
        self.cancel = threading.Event()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def start(self, what: str, fn: Callable[[threading.Event], ExportResult],
              done: Callable[[ExportResult], None]) -> str | None:
        """Run ``fn(cancel)`` in a thread and hand its result to ``done``; returns why it was refused, or None."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return (f"an export is already running ({self._what}, started "
                        f"{time.monotonic() - self._started:.0f} s ago); try again when it has finished")

            def run() -> None:
                try:
                    result = fn(self.cancel)
                except Exception as exc:  # noqa: BLE001 - the caller gets a reply whatever went wrong
                    result = ExportResult(False, f"export failed: {type(exc).__name__}: {exc}")
                done(result)

            self._what, self._started = what, time.monotonic()
            self._thread = threading.Thread(target=run, name="export", daemon=True)
            self._thread.start()
        return None

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask a running export to stop (an HDF5 copy stops between files) and wait; True when none is left."""
        self.cancel.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
