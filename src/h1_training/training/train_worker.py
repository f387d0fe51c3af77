"""One training job, run as ``python -m h1_training.training.train_worker JOB_DIR`` by the server's JobManager.

Reads ``JOB_DIR/request.json`` (written by ``training/jobs.py``), converts HDF5 sessions to a LeRobotDataset when the
dataset is not one already, trains with ``h1_training.training.trainer.run_training`` and prints one JSON object per
line on stdout::

    {"event": "progress", "stage": "train", "step": 10, "total_steps": 100, "epoch": 0.4, "loss": 0.8, "lr": 1e-4,
     "eta_s": 12.5}
    {"event": "convert", "summary": {...}}
    {"event": "done", "model_id": "..."}
    {"event": "error", "message": "..."}

SIGTERM asks the trainer to stop at the next step (``should_stop``); the job then ends as cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

_stop = False
_events = sys.stdout  # replaced in main(): only emit() may write to the real stdout


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001
    global _stop
    _stop = True


def emit(event: str, **fields: Any) -> None:
    _events.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    _events.flush()


def is_lerobot_dataset(path: Path) -> bool:
    return (path / "meta" / "info.json").is_file()


def session_folders(paths: list[Path]) -> list[Path]:
    """HDF5 session folders (or single episode files) named by the request; a data dir with
    ``training_session_epoch*`` folders expands to all of them (any other folder, e.g. a seed client's
    ``<task>/epoch_N/raw`` tree, is searched for episodes by the converter)."""
    from h1_training.recording.layout import EPISODE_GLOB, session_epoch_of

    out: list[Path] = []
    for p in paths:
        sessions = (sorted(q for q in p.iterdir() if q.is_dir() and session_epoch_of(q) is not None)
                    if p.is_dir() else [])
        if p.is_dir() and not any(p.glob(EPISODE_GLOB)) and sessions:
            out += sessions
        else:
            out.append(p)
    return out


def policy_cameras(policy_type: str, extra: dict[str, Any]) -> tuple[str, ...] | None:
    """The HDF5 cameras a policy type looks at, when it says (its ``cameras`` option; None: all of them), so the
    conversion encodes only those."""
    from h1_training.policy.models import get_policy_type
    from h1_training.policy.obs import HDF5_TO_OBS_CAMERA

    names = extra.get("cameras")
    if names is None:
        field = getattr(get_policy_type(policy_type).config_class(), "__dataclass_fields__", {}).get("cameras")
        names = field.default if field is not None else None
    if not names:
        return None
    to_hdf5 = {obs: h5 for h5, obs in HDF5_TO_OBS_CAMERA.items()}
    return tuple(to_hdf5.get(n, n) for n in names)


def _as_dict(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) else obj


def run(job_dir: Path) -> int:
    spec = json.loads((job_dir / "request.json").read_text())
    req = spec["request"]
    models_dir = Path(spec["models_dir"])
    paths = [Path(p) for p in req["dataset"]]

    if req["policy_type"] == "scripted":
        from h1_training.training.scripted_fit import fit_scripted

        info = fit_scripted(session_folders(paths), models_dir, parent=req.get("parent_model"),
                            data_epoch=req.get("data_epoch"))
        emit("done", model_id=info.id, info=_as_dict(info))
        return 0

    if len(paths) == 1 and is_lerobot_dataset(paths[0]):
        dataset_dir = paths[0]
    else:
        from h1_training.training.convert import convert_sessions

        emit("progress", stage="convert", step=0, total_steps=req["steps"])
        dataset_dir = job_dir / "dataset"
        summary = convert_sessions(session_folders(paths), dataset_dir, progress=False,
                                   lookahead=int(req.get("action_lookahead", 1)),
                                   cameras=policy_cameras(req["policy_type"], req.get("extra") or {}))
        emit("convert", summary=_as_dict(summary))
        if not getattr(summary, "episodes", 0):
            raise ValueError(f"no usable episode in {[str(p) for p in paths]}: {_as_dict(summary)}")

    from h1_training.training.trainer import TrainConfig, TrainingStopped, run_training

    extra = dict(req.get("extra") or {})  # policy config options only (TrainConfig.extra)
    cfg = TrainConfig(policy_type=req["policy_type"], dataset_dir=dataset_dir, output_root=models_dir,
                      steps=req["steps"], batch_size=req["batch_size"], lr=req["lr"], seed=req["seed"],
                      device=req["device"], human_weight=req["human_weight"],
                      pre_intervention_s=float(req.get("pre_intervention_s", 0.0)),
                      parent_model=req.get("parent_model"), extra=extra)
    last = [0.0]

    def progress(p: Any) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and p.step < p.total_steps:  # at most 5 lines/s; always the last step
            return
        last[0] = now
        emit("progress", stage="train", step=p.step, total_steps=p.total_steps, epoch=p.epoch, loss=p.loss,
             lr=p.lr, eta_s=p.eta_s)

    try:
        info = run_training(cfg, progress=progress, should_stop=lambda: _stop)
    except TrainingStopped as exc:
        emit("error", message=f"cancelled: {exc}")
        return 3
    emit("done", model_id=info.id, info=_as_dict(info))
    return 0


def _exit_with_parent(parent: int, period_s: float = 1.0) -> None:
    """End this worker when the server that started it is gone (killed with SIGKILL, crashed): the worker runs in
    its own process group, so nothing else would stop it, and an orphaned training job holds the CPU or GPU for
    nothing (its results have no reader). Linux reparents an orphan, so a changed parent pid is the signal."""
    while True:
        time.sleep(period_s)
        if os.getppid() != parent:
            print(f"train_worker: the server that started this job (pid {parent}) is gone; stopping the job",
                  file=sys.stderr, flush=True)
            os._exit(3)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m h1_training.training.train_worker JOB_DIR", file=sys.stderr)
        return 2
    global _events
    # Keep a private copy of stdout for the event lines and point fd 1 at stderr (the job's log), so that
    # whatever a library prints can never be mistaken for an event.
    _events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, _on_sigterm)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    try:
        return run(Path(argv[0]))
    except Exception as exc:
        traceback.print_exc()
        emit("error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
