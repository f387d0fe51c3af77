"""Names from requests, checked against the data roots; and the trash inside each root (no rclpy).

Every name a service request carries (a dataset, an episode, a trash entry, an export folder) goes through
:func:`inside` before anything is opened, moved or written: no absolute paths, no ``..``, no NUL, and after
resolving symlinks the path must still lie inside one of the roots (a symlinked folder that points elsewhere is
refused too).

Trash: ``<root>/.trash/<YYYYmmdd-HHMMSS-ffffff>/<the episode's path relative to root>`` (hidden, so the catalog
does not list it), with the episode's "exclude from training" marker beside it; ``restore`` moves it back to
where it was, never over a file that is there now. Nothing is destroyed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from h1_training.recording import layout as L

TRASH = ".trash"


class PathRefused(ValueError):
    """A name from a request that would leave the data roots (the message says why)."""


def check_name(name: str) -> PurePosixPath:
    """A relative, normalised name without traversal; PathRefused otherwise."""
    if not name or "\x00" in name:
        raise PathRefused("empty name or a NUL character")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith("~"):
        raise PathRefused(f"{name!r}: absolute paths are refused; give a name relative to the data root")
    if any(part == ".." for part in pure.parts):
        raise PathRefused(f"{name!r}: '..' is refused")
    return pure


def inside(path: str | Path, roots: Sequence[str | Path]) -> Path:
    """``path`` resolved (symlinks followed) when it lies inside one of ``roots``; PathRefused otherwise."""
    resolved = Path(path).resolve()
    for root in roots:
        r = Path(root).resolve()
        if resolved == r or r in resolved.parents:
            return resolved
    raise PathRefused(f"{path} is outside the data root(s) {', '.join(map(str, roots))}")


def root_of(path: str | Path, roots: Sequence[str | Path]) -> Path:
    resolved = inside(path, roots)
    for root in roots:
        r = Path(root).resolve()
        if resolved == r or r in resolved.parents:
            return r
    raise PathRefused(f"{path} is outside the data roots")  # pragma: no cover - inside() checked it


def trash_episode(episode: str | Path, roots: Sequence[str | Path], now: float | None = None) -> str:
    """Move an episode (and its exclude marker) into its root's trash; returns the trash entry name."""
    src = inside(episode, roots)
    if not src.is_file() or L.episode_index_of(src) is None:
        raise PathRefused(f"{episode} is not an episode file")
    root = root_of(src, roots)
    rel = src.relative_to(root)
    if rel.parts and rel.parts[0] == TRASH:
        raise PathRefused(f"{episode} is already in the trash")
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1e6) % 1_000_000:06d}"
    dst = root / TRASH / stamp / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    marker = L.exclude_marker(src)
    if marker.exists():
        shutil.move(str(marker), str(L.exclude_marker(dst)))
    return f"{stamp}/{rel.as_posix()}"


def trash_entries(roots: Sequence[str | Path]) -> list[str]:
    out = []
    for root in roots:
        trash = Path(root) / TRASH
        if trash.is_dir():
            out += sorted(p.relative_to(trash).as_posix() for p in trash.rglob(L.EPISODE_GLOB))
    return out


def restore_episode(entry: str, roots: Sequence[str | Path]) -> Path:
    """Move a trash entry back where it was; PathRefused when the name is bad or the place is taken."""
    pure = check_name(entry)
    if len(pure.parts) < 2:
        raise PathRefused(f"{entry!r} is not a trash entry (<stamp>/<path>)")
    for root in roots:
        trash = Path(root).resolve() / TRASH
        src = trash / Path(*pure.parts)
        if not src.is_file():
            continue
        inside(src, [trash])
        dst = Path(root).resolve() / Path(*pure.parts[1:])
        inside(dst, roots)
        if dst.exists():
            raise PathRefused(f"{dst} exists now (a newer recording took the name); move it away first")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
        marker = L.exclude_marker(src)
        if marker.exists():
            shutil.move(str(marker), str(L.exclude_marker(dst)))
        return dst
    raise PathRefused(f"no trash entry {entry!r}")
