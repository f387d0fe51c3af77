"""Training jobs of the policy server: a queue, one job at a time, each in its own worker process.

A job runs ``python -m h1_training.training.train_worker JOB_DIR`` (conversion of HDF5 sessions if needed, then
``h1_training.training.trainer.run_training``). The worker prints one JSON object per line (progress, done, error);
its stderr goes to ``JOB_DIR/worker.log``. A separate process keeps the inference loop responsive while torch
trains, lets a crash or an out-of-memory kill end only the job, and makes cancel a signal (SIGTERM, then SIGKILL
after a grace period). When a job succeeds and asked to be deployed, ``on_success(job)`` runs (the server swaps
its default model there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from h1_training import procs
from h1_training.policy.train_request import DEFAULT_TRAINING_DEVICE, TRAINABLE_POLICY_TYPES, TRAINING_DEVICES

log = logging.getLogger("h1_training.serve.jobs")

# Policy types a job can train: the learned ones (policy/models) and "scripted", fitted by the worker without torch.
POLICY_TYPES = TRAINABLE_POLICY_TYPES
JOB_STATES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
_CANCEL_GRACE_S = 30.0


@dataclass
class TrainRequest:
    """What ``POST /train`` accepts (JSON body) and ``h1-training serve --auto-train`` submits."""

    policy_type: str
    dataset: list[str]                 # a LeRobotDataset dir, or HDF5 session folders / episode files
    steps: int = 2000
    batch_size: int = 8
    lr: float | None = None            # None: the policy's preset learning rate
    seed: int = 0
    device: str = DEFAULT_TRAINING_DEVICE  # TRAINING_DEVICES (policy/train_request.py)
    human_weight: float = 1.0          # sampling weight of human-correction frames (IWR/Sirius style)
    pre_intervention_s: float = 0.0    # policy frames this long before a takeover get weight 0 (Sirius)
    action_lookahead: int = 1          # conversion: a human frame's action is qpos this many frames later
    parent_model: str | None = None    # model id to fine-tune from
    deploy: bool = True                # swap the server's default model to the result
    data_epoch: int | None = None      # the data epoch this job trains on (auto mode), for the record
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any, data_dir: Path | None = None) -> TrainRequest:
        """Validate a request body; raises ValueError with the reason. Relative dataset paths are resolved
        against ``data_dir``, and with a ``data_dir`` every dataset must lie inside it."""
        if not isinstance(raw, dict):
            raise ValueError("the request body must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(known)}")
        for key in ("policy_type", "dataset"):
            if key not in raw:
                raise ValueError(f"missing field {key!r}")
        dataset = raw["dataset"]
        if isinstance(dataset, str):
            dataset = [dataset]
        if not isinstance(dataset, list) or not dataset or not all(isinstance(d, str) for d in dataset):
            raise ValueError("'dataset' must be a path or a non-empty list of paths")
        req = cls(**{**raw, "dataset": dataset})
        req.validate(data_dir)
        return req

    def validate(self, data_dir: Path | None = None) -> None:
        if self.policy_type not in POLICY_TYPES:
            raise ValueError(f"unknown policy_type {self.policy_type!r}; one of {list(POLICY_TYPES)}")
        checks = [
            ("steps", isinstance(self.steps, int) and 1 <= self.steps <= 10_000_000),
            ("batch_size", isinstance(self.batch_size, int) and 1 <= self.batch_size <= 4096),
            ("lr", self.lr is None or (isinstance(self.lr, (int, float)) and math.isfinite(self.lr)
                                       and 0 < self.lr < 1)),
            ("seed", isinstance(self.seed, int)),
            ("human_weight", isinstance(self.human_weight, (int, float)) and 0 <= self.human_weight <= 100),
            ("action_lookahead", isinstance(self.action_lookahead, int) and 1 <= self.action_lookahead <= 500),
            ("pre_intervention_s", isinstance(self.pre_intervention_s, (int, float))
             and 0 <= self.pre_intervention_s <= 60),
            ("device", self.device in TRAINING_DEVICES),
            ("deploy", isinstance(self.deploy, bool)),
            ("extra", isinstance(self.extra, dict)),
            ("parent_model", self.parent_model is None or isinstance(self.parent_model, str)),
            ("data_epoch", self.data_epoch is None or isinstance(self.data_epoch, int)),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}")
        resolved = []
        for d in self.dataset:
            path = Path(d)
            if data_dir is not None:
                root = Path(data_dir).resolve()
                path = (root / path).resolve()
                if path != root and root not in path.parents:
                    raise ValueError(f"dataset {d!r} is outside the data dir {root}")
            if not path.exists():
                raise ValueError(f"dataset {d!r} does not exist ({path})")
            resolved.append(str(path))
        self.dataset = resolved


@dataclass
class Job:
    id: str
    request: TrainRequest
    status: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stage: str = ""                      # "convert", "train", "deploy"
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0                   # training epoch (passes over the data), as the trainer reports it
    loss: float | None = None
    lr: float | None = None
    eta_s: float | None = None
    model_id: str | None = None
    served_epoch: int | None = None      # the /training_status epoch this job's model was deployed as
    error: str | None = None
    convert: dict[str, Any] | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elapsed_s"] = round((self.finished or time.time()) - self.started, 2) if self.started else 0.0
        return d


class JobManager:
    def __init__(self, work_dir: Path, models_dir: Path, on_success: Callable[[Job], None] | None = None,
                 python: str = sys.executable, worker_module: str = "h1_training.training.train_worker") -> None:
        self.work_dir = Path(work_dir)
        self.models_dir = Path(models_dir)
        self.on_success = on_success
        self.python = python
        self.worker_module = worker_module
        self._jobs: dict[str, Job] = {}
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._stop_running = threading.Event()   # set: stop the running job's worker (cancel, close)
        self._proc: subprocess.Popen | None = None  # the running worker (close kills its group if it lingers)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="train-jobs", daemon=True)
        self._thread.start()

    # -- API ------------------------------------------------------------------------------------------------
    def submit(self, request: TrainRequest) -> Job:
        job = Job(id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], request=request,
                  total_steps=request.steps)
        with self._cond:
            if self._closing:
                raise RuntimeError("the job manager is shutting down")
            self._jobs[job.id] = job
            self._queue.append(job.id)
            self._cond.notify_all()
        log.info("job %s queued: %s on %s (%d steps)", job.id, request.policy_type, request.dataset, request.steps)
        return job

    def get(self, job_id: str) -> Job:
        with self._cond:
            if job_id not in self._jobs:
                raise KeyError(job_id)
            return self._jobs[job_id]

    def list(self) -> list[Job]:
        with self._cond:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def active(self) -> Job | None:
        """The running job, else the next queued one."""
        with self._cond:
            running = [j for j in self._jobs.values() if j.status in ("running", "paused")]
            if running:
                return running[0]
            return self._jobs[self._queue[0]] if self._queue else None

    def pending_deploy(self) -> bool:
        """True while a job that will replace the default model is queued or running."""
        with self._cond:
            return any(j.status in ("queued", "running", "paused") and j.request.deploy for j in self._jobs.values())

    def pause(self, job_id: str) -> Job:
        """Stop a running job's worker where it is (SIGSTOP to its process group); ``resume`` continues it.
        The GPU memory stays allocated while paused. Raises ValueError when the job is not running."""
        return self._signal(job_id, "running", "paused", signal.SIGSTOP)

    def resume(self, job_id: str) -> Job:
        return self._signal(job_id, "paused", "running", signal.SIGCONT)

    def _signal(self, job_id: str, wanted: str, new: str, sig: int) -> Job:
        with self._cond:
            job = self.get(job_id)
            if job.status != wanted:
                raise ValueError(f"job {job_id} is {job.status}, not {wanted}")
            if self._proc is None or self._proc.poll() is not None:
                raise ValueError(f"job {job_id} has no live worker process")
            os.killpg(self._proc.pid, sig)   # the worker runs in its own session (start_new_session)
            job.status = new
            return job

    def cancel(self, job_id: str) -> Job:
        with self._cond:
            job = self.get(job_id)
            if job.status == "queued":
                self._queue.remove(job_id)
                job.status, job.finished = "cancelled", time.time()
            elif job.status in ("running", "paused"):
                job.cancel_requested = True
                if job.status == "paused" and self._proc is not None and self._proc.poll() is None:
                    os.killpg(self._proc.pid, signal.SIGCONT)  # a stopped worker cannot handle SIGTERM
                    job.status = "running"
                self._stop_running.set()
            return job

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closing = True
            for jid in list(self._queue):
                self._jobs[jid].status = "cancelled"
            self._queue.clear()
            self._stop_running.set()
            self._cond.notify_all()
        self._thread.join(timeout)
        proc = self._proc
        if self._thread.is_alive() and proc is not None:  # the worker ignored SIGTERM for `timeout` s
            procs.kill_group(proc, ((signal.SIGKILL, 2.0),))
            self._thread.join(2.0)

    # -- worker loop ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                job = self._jobs[self._queue.pop(0)]
                job.status, job.started = "running", time.time()
                self._stop_running.clear()
            try:
                self._run_job(job)
            except Exception as exc:  # never let one job take the queue down
                log.exception("job %s crashed the job runner", job.id)
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
            job.finished = time.time()
            log.info("job %s %s%s", job.id, job.status, f": {job.error}" if job.error else "")

    def _run_job(self, job: Job) -> None:
        job_dir = self.work_dir / "jobs" / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        spec = {"job_id": job.id, "request": asdict(job.request), "models_dir": str(self.models_dir),
                "work_dir": str(job_dir)}
        (job_dir / "request.json").write_text(json.dumps(spec, indent=2))
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
        done: dict[str, Any] = {}

        def line(raw: str) -> None:
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("job %s: unparsable worker line %r", job.id, raw[:200])
                return
            if (finished := self._apply(job, event)) is not None:
                done.update(finished)

        # the worker's stderr goes to worker.log; a cancel sends SIGTERM to its group (the worker stops at the
        # next step and registers nothing), SIGKILL after _CANCEL_GRACE_S
        with open(job_dir / "worker.log", "ab") as errlog:
            run = procs.run([self.python, "-m", self.worker_module, str(job_dir)], on_line=line, stderr=errlog,
                            env=env, cancel=self._stop_running,
                            stop_signals=((signal.SIGTERM, _CANCEL_GRACE_S), (signal.SIGKILL, 5.0)),
                            on_start=lambda proc: setattr(self, "_proc", proc))
        self._proc = None
        rc = run.rc
        if job.cancel_requested:
            job.status = "cancelled"
            return
        if rc != 0 or not done:
            job.status = "failed"
            tail = (job_dir / "worker.log").read_text(errors="replace")[-2000:]
            job.error = job.error or f"worker exited with code {rc}; log tail:\n{tail}"
            return
        job.model_id = str(done["model_id"])
        if job.request.deploy and self.on_success is not None:
            job.stage = "deploy"
            try:
                self.on_success(job)
            except Exception as exc:
                log.exception("job %s: deploying %s failed", job.id, job.model_id)
                job.status, job.error = "failed", f"trained {job.model_id} but deploy failed: {exc}"
                return
        job.status = "succeeded"

    @staticmethod
    def _apply(job: Job, event: dict[str, Any]) -> dict[str, Any] | None:
        kind = event.get("event")
        if kind == "progress":
            for key in ("stage", "step", "total_steps", "epoch", "loss", "lr", "eta_s"):
                if key in event and event[key] is not None:
                    setattr(job, key, event[key])
        elif kind == "convert":
            job.convert = event.get("summary")
        elif kind == "error":
            job.error = str(event.get("message", "unknown error"))
        elif kind == "done":
            return event
        return None
