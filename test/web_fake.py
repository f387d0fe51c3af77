"""A plain in-memory implementation of the web app's Backend protocol (the seam the API tests use).

It is not a stand-in for any ROS class: it keeps its own small world (a session that walks the seed's keys,
a training job advanced by ``tick()``, a catalog, a comparison, workflow parameters with ranges) and tells the
app about every change through its listeners, as the ROS node does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from h1_training.web.backend import InvalidValue, Listener, NotFound, Outcome, ParamInfo, TrainingRequest

# state -> key -> next state (the seed's flow, shortened)
FLOW = {"WAITING": {"y": "READY", "n": "STOPPED"}, "READY": {"y": "EXECUTING"},
        "EXECUTING": {"s": "LABELING"}, "LABELING": {}, "DAMPING": {"e": "DECIDING"},
        "DECIDING": {"y": "READY", "n": "WAITING"}}


class MemoryBackend:
    def __init__(self, data_root: Path) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self.calls: list[tuple[str, Any]] = []
        root = Path(data_root)
        self.episodes: dict[str, list[dict[str, Any]]] = {
            "h1_data/training_session_epoch1": [self._ep(root, "h1_data/training_session_epoch1", i) for i in range(3)],
            "h1_data/training_session_epoch2": [self._ep(root, "h1_data/training_session_epoch2", 0)],
        }
        self.outside = {"name": "elsewhere/training_session_epoch9", "path": "/tmp/../etc/elsewhere",
                        "num_episodes": 1}
        self.params = {p.name: p for p in [
            ParamInfo("workflow.min_episodes_before_training", "int", 50, "episodes before auto-training", 1, 100000),
            ParamInfo("workflow.auto_train_enabled", "bool", True, "train automatically"),
            ParamInfo("workflow.training_trigger_interval_hours", "float", 24.0, "interval", 0.0, 8760.0),
            ParamInfo("workflow.auto_deploy_enabled", "bool", False, "deploy automatically"),
        ]}
        self._state: dict[str, dict[str, Any]] = {
            "session": {"state_name": "WAITING", "prompt": "y: start epoch 1, n: skip", "allowed_keys": ["y", "n"],
                        "epoch": 1, "label": -1, "episodes_saved": 0},
            "recorder": {"recording": False, "frames": 0, "achieved_rate_hz": 0.0, "missed_ticks": 0, "error": ""},
            "trainer": {"state_name": "IDLE", "job_id": "", "progress_pct": 0.0, "message": ""},
            "stats": {}, "loss": {"job_id": "", "points": []},
            "comparison": {"state_name": "IDLE", "models": []},
            "models": {"models": ["v1-act", "v2-act", "v3-diffusion"], "deployed": "v1-act"},
            "workflow": {"stage_name": "IDLE", "recommendations": ["collect 50 episodes before training"]},
        }
        self._publish_datasets()

    @staticmethod
    def _ep(root: Path, ds: str, i: int) -> dict[str, Any]:
        return {"dataset": ds, "index": i, "path": str(root / ds / f"episode_{i}.hdf5"), "frames": 500,
                "quality_score": 90.0, "flagged": False}

    # --- plumbing --------------------------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, topic: str, payload: dict[str, Any], merge: bool = True) -> None:
        with self._lock:
            if topic == "loss":
                self._state["loss"]["points"] = self._state["loss"]["points"] + payload["points"]
                self._state["loss"]["job_id"] = payload["job_id"]
            else:
                self._state[topic] = {**self._state.get(topic, {}), **payload} if merge else payload
            listeners, full = list(self._listeners), (payload if topic == "loss" else dict(self._state[topic]))
        for fn in listeners:
            fn(topic, full)

    def state(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._state.items()}

    def _publish_datasets(self) -> None:
        sets = [{"name": name, "path": str(Path(eps[0]["path"]).parent) if eps else name, "format": "hdf5",
                 "num_episodes": len(eps), "quality_score": 90.0} for name, eps in self.episodes.items()]
        self.emit("datasets", {"datasets": sets + [self.outside]}, merge=False)

    # --- session ---------------------------------------------------------------------------------------------
    def session_command(self, key: str) -> Outcome:
        self.calls.append(("session_command", key))
        now = self._state["session"]["state_name"]
        nxt = FLOW.get(now, {}).get(key)
        if nxt is None:
            return Outcome(False, f"'{key}' does nothing in {now}")
        self.emit("session", {"state_name": nxt, "allowed_keys": sorted(FLOW.get(nxt, {}))})
        return Outcome(True, f"{now} -> {nxt}", {"state_name": nxt})

    def session_label(self, success: bool, note: str) -> Outcome:
        self.calls.append(("session_label", (success, note)))
        if self._state["session"]["state_name"] != "LABELING":
            return Outcome(False, "no episode to label now")
        self.emit("session", {"state_name": "DAMPING", "label": int(success), "allowed_keys": ["e"]})
        return Outcome(True, "labelled")

    def start_data_collection(self, mode: str, target_episodes: int) -> Outcome:
        self.calls.append(("start_data_collection", (mode, target_episodes)))
        self.emit("workflow", {"stage_name": "COLLECTING"})
        return Outcome(True, f"collecting {target_episodes} episodes ({mode})")

    # --- training --------------------------------------------------------------------------------------------
    def start_training(self, request: TrainingRequest) -> Outcome:
        self.calls.append(("start_training", request))
        if self._state["trainer"]["state_name"] == "RUNNING":
            return Outcome(False, "a job is already running")
        job = f"job-{len(self.calls)}"
        self.emit("trainer", {"state_name": "RUNNING", "job_id": job, "policy_type": request.policy_type,
                              "dataset": request.dataset, "progress_pct": 0.0})
        with self._lock:
            self._state["loss"] = {"job_id": job, "points": []}
        return Outcome(True, f"started {job}", {"job_id": job})

    def tick(self, step: int, loss: float) -> None:
        job = self._state["trainer"]["job_id"]
        self.emit("stats", {"job_id": job, "step": step, "total_steps": 100, "loss": loss, "eta_s": 100 - step})
        self.emit("loss", {"job_id": job, "points": [[step, loss]]})

    def stop_training(self) -> Outcome:
        self.calls.append(("stop_training", None))
        if self._state["trainer"]["state_name"] != "RUNNING":
            return Outcome(False, "no job is running")
        self.emit("trainer", {"state_name": "CANCELLED"})
        return Outcome(True, "cancelled")

    # --- datasets --------------------------------------------------------------------------------------------
    def refresh_datasets(self) -> Outcome:
        self.calls.append(("refresh_datasets", None))
        self._publish_datasets()
        return Outcome(True, "refreshed")

    def _episode(self, dataset: str, index: int) -> dict[str, Any]:
        eps = self.episodes.get(dataset)
        if eps is None or not 0 <= index < len(eps):
            raise NotFound(f"no episode {index} in {dataset!r}")
        return eps[index]

    def episode(self, dataset: str, index: int) -> dict[str, Any]:
        return dict(self._episode(dataset, index))

    def export_dataset(self, dataset: str, fmt: str) -> Outcome:
        self.calls.append(("export_dataset", (dataset, fmt)))
        return Outcome(True, f"exported {dataset} as {fmt}", {"output_path": f"exports/{fmt}"})

    def delete_episode(self, dataset: str, index: int) -> Outcome:
        self.calls.append(("delete_episode", (dataset, index)))
        self._episode(dataset, index)
        del self.episodes[dataset][index]
        self._publish_datasets()
        return Outcome(True, f"moved episode {index} of {dataset} to the trash")

    def flag_episode(self, dataset: str, index: int, flagged: bool) -> Outcome:
        self.calls.append(("flag_episode", (dataset, index, flagged)))
        self._episode(dataset, index)["flagged"] = flagged
        return Outcome(True, "flagged" if flagged else "unflagged")

    # --- comparison ------------------------------------------------------------------------------------------
    def start_comparison(self, model_ids: list[str], mode: str, trials_per_model: int, alpha: float) -> Outcome:
        self.calls.append(("start_comparison", (model_ids, mode, trials_per_model, alpha)))
        unknown = [m for m in model_ids if m not in self._state["models"]["models"]]
        if unknown:
            return Outcome(False, f"unknown model(s): {', '.join(unknown)}")
        self.emit("comparison", {"state_name": "RUNNING", "mode": mode,
                                 "models": [{"model_id": m, "trials": 0} for m in model_ids]})
        return Outcome(True, "comparison started", {"comparison_id": "cmp-1"})

    def stop_comparison(self) -> Outcome:
        self.calls.append(("stop_comparison", None))
        self.emit("comparison", {"state_name": "CANCELLED"})
        return Outcome(True, "stopped")

    def deploy_model(self, model_id: str) -> Outcome:
        self.calls.append(("deploy_model", model_id))
        previous = self._state["models"]["deployed"]
        self.emit("models", {"deployed": model_id})
        return Outcome(True, f"deployed {model_id}", {"previous_model_id": previous})

    # --- workflow --------------------------------------------------------------------------------------------
    def workflow_parameters(self) -> list[ParamInfo]:
        return list(self.params.values())

    def set_workflow_parameter(self, name: str, value: Any) -> Outcome:
        self.calls.append(("set_workflow_parameter", (name, value)))
        if name == "workflow.training_trigger_interval_hours" and value == 13.0:
            raise InvalidValue("the owner refuses 13 (an example of a reason from the node)")
        p = self.params[name]
        self.params[name] = ParamInfo(p.name, p.type, value, p.description, p.min, p.max, p.read_only)
        self.emit("params", {"parameters": [x.as_dict() for x in self.params.values()]}, merge=False)
        return Outcome(True, f"{name} = {value}")
