"""The seam between the web app and the rest of the system (no rclpy here).

The ASGI app (``web/app.py``) only ever talks to a :class:`Backend`. The ROS node ``training_web_app``
(``nodes/training_web_app_node.py``) implements it over topics, services and parameters; the API tests
implement it in memory. Every method is synchronous and may block for a service call (the app runs them in a
worker thread); live state reaches the app through the listener registered with :meth:`Backend.add_listener`.

State is plain JSON-able data, one dict per *topic* of the live stream:

=============  ==============================================================================================
topic          payload
=============  ==============================================================================================
session        hil_session/status fields (state_name, prompt, allowed_keys, epoch, label, arm_mode, ...)
recorder       episode_recorder/status fields (recording, frames, achieved_rate_hz, missed_ticks, error, ...)
cameras        {"names": [...], "connected": [...], "placeholder": [...], "rate_hz": [...], "detail": [...]}
camera         one thumbnail: {"name", "jpeg_b64", "placeholder", "stamp"} (topic key ``camera/<name>``)
trainer        /lerobot/trainer_status fields (state_name, job_id, policy_type, progress_pct, message, ...)
stats          /lerobot/training_stats fields (epoch, step, total_steps, loss, learning_rate, eta_s, ...)
loss           {"job_id", "points": [[step, loss], ...]}: points are *appended* (see ``APPEND_TOPICS``)
datasets       {"datasets": [DatasetInfo fields, ...]}
comparison     /model_comparison/status fields with ``models`` a list of ModelMetrics dicts
workflow       /training_workflow/status fields
analytics      /lerobot/performance_analytics fields
models         {"models": [model ids], "deployed": id}
params         {"node": name, "parameters": [ParamInfo dicts]} (the workflow parameters, after any change)
links          {"<service or topic>": true/false}: which parts of the system answer now
=============  ==============================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from h1_training.policy.train_request import LEARNED_POLICY_TYPES

POLICY_TYPES = LEARNED_POLICY_TYPES  # the web form trains learned policies only (scripted ones are fitted, not trained)
SESSION_KEYS = ("y", "n", "s", "e")
EXPORT_FORMATS = ("hdf5", "lerobot", "mcap")
COMPARISON_MODES = ("ab", "detailed")
COLLECTION_MODES = ("hil", "kinesthetic", "teleoperation", "policy")  # /lerobot/start_data_collection (issue 9)
# Topics whose payloads accumulate (a client that falls behind gets every point, not only the newest).
APPEND_TOPICS = ("loss",)

Listener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Outcome:
    """What an action did: ``ok`` False means the system refused it (the message says why)."""

    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class BackendError(Exception):
    """A request the backend cannot serve; ``status`` is the HTTP status the app answers with."""

    status = 500


class NotFound(BackendError):
    status = 404


class Unavailable(BackendError):
    """The part of the system that would do it is not running (service not offered, timed out)."""

    status = 503


class InvalidValue(BackendError):
    """The owner of a value refused it (e.g. a parameter out of range), with its reason."""

    status = 400


@dataclass(frozen=True)
class TrainingRequest:
    policy_type: str
    dataset: str = ""            # "" = the workflow manager's choice (latest)
    steps: int = 0               # 0 = the trainer's default
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy_type not in POLICY_TYPES:
            raise ValueError(f"policy_type must be one of {', '.join(POLICY_TYPES)}; got {self.policy_type!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of the workflow node, as ``ros2 param describe`` shows it."""

    name: str
    type: str                    # "bool", "int", "float", "str", "list"
    value: Any
    description: str = ""
    min: float | None = None
    max: float | None = None
    read_only: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "value": self.value, "description": self.description,
                "min": self.min, "max": self.max, "read_only": self.read_only}


def check_param_value(info: ParamInfo, value: Any) -> tuple[Any, str | None]:
    """``(value as the parameter's type, None)`` or ``(None, reason)``; ints are taken for floats."""
    if info.read_only:
        return None, f"{info.name} is read-only"
    kind = info.type
    if kind == "bool":
        if not isinstance(value, bool):
            return None, f"{info.name} must be true or false, got {value!r}"
        return value, None
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"{info.name} must be a number, got {value!r}"
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                return None, f"{info.name} must be an integer, got {value!r}"
            value = int(value)
        else:
            value = float(value)
        if info.min is not None and value < info.min:
            return None, f"{info.name}={value} is below the minimum {info.min:g}"
        if info.max is not None and value > info.max:
            return None, f"{info.name}={value} is above the maximum {info.max:g}"
        return value, None
    if kind == "str":
        if not isinstance(value, str):
            return None, f"{info.name} must be a string, got {value!r}"
        return value, None
    if kind == "list":
        if not isinstance(value, list):
            return None, f"{info.name} must be a list, got {value!r}"
        return value, None
    return None, f"{info.name} has type {kind}, which the web page does not set"


@runtime_checkable
class Backend(Protocol):
    """Everything the web app may read or do. Implementations: the ROS node, the tests' in-memory one."""

    def state(self) -> dict[str, dict[str, Any]]:
        """The latest payload of every topic (see the module docstring); a copy the caller may keep."""

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(topic, payload)`` (from any thread, in the order of the changes) on every change;
        returns the unsubscribe. Listeners must not block (the app's only queues)."""

    # session
    def session_command(self, key: str) -> Outcome: ...
    def session_label(self, success: bool, note: str) -> Outcome: ...
    def start_data_collection(self, mode: str, target_episodes: int) -> Outcome: ...

    # training
    def start_training(self, request: TrainingRequest) -> Outcome: ...
    def stop_training(self) -> Outcome: ...

    # datasets (names are validated by the app; NotFound for an unknown dataset or episode)
    def refresh_datasets(self) -> Outcome: ...
    def episode(self, dataset: str, index: int) -> dict[str, Any]: ...
    def export_dataset(self, dataset: str, fmt: str) -> Outcome: ...
    def delete_episode(self, dataset: str, index: int) -> Outcome: ...
    def flag_episode(self, dataset: str, index: int, flagged: bool) -> Outcome: ...

    # comparison
    def start_comparison(self, model_ids: list[str], mode: str, trials_per_model: int, alpha: float) -> Outcome: ...
    def stop_comparison(self) -> Outcome: ...
    def deploy_model(self, model_id: str) -> Outcome: ...

    # workflow parameters (InvalidValue with the owner's reason when it refuses a value)
    def workflow_parameters(self) -> list[ParamInfo]: ...
    def set_workflow_parameter(self, name: str, value: Any) -> Outcome: ...
