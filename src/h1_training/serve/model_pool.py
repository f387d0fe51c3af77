"""The models a policy server holds in memory, the default one, and the served epoch (no network code).

- Models are addressed by id: the built-in scripted ones (``scripted`` = reach, ``scripted-hold``; ``noop``, the
  benchmarks' wire baseline, only on request with ``?model=noop``, never the default) and every model in
  the registry under ``models_dir`` (``h1_training.training.registry.ModelRegistry``). A model is loaded on first
  use and kept (at most ``max_loaded``; the least recently used non-default model is dropped first).
- The *default* model answers sessions that did not ask for one. ``swap_default`` loads the new model completely
  before switching, under a lock, so a request in flight finishes on the old weights and the next one gets the new
  ones; nobody is disconnected.
- ``epoch`` is what ``GET /training_status`` reports: it goes up by one on every swap of the default model (a
  finished training job or a manual deploy) and is kept in ``models_dir/serve_state.json`` so that a restart never
  makes it go back (the H1 session waits for an epoch greater than the last one it saw).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h1_training.policy.scripted import NoopPolicy, ScriptedConfig, ScriptedPolicy, is_scripted_dir

log = logging.getLogger("h1_training.serve")

STATE_FILE = "serve_state.json"
BUILTIN_MODELS: dict[str, Callable[[], Any]] = {
    "scripted": lambda: ScriptedPolicy(ScriptedConfig(mode="reach"), model_id="scripted"),
    "scripted-hold": lambda: ScriptedPolicy(ScriptedConfig(mode="hold"), model_id="scripted-hold"),
    "noop": lambda: NoopPolicy(model_id="noop"),  # the wire baseline of `bench serve`; never deployable
}

UNDEPLOYABLE = frozenset({"noop"})


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown model"


@dataclass
class LoadedModel:
    model_id: str
    policy: Any                                 # the Policy protocol: metadata, infer(obs), reset()
    info: dict[str, Any]                        # policy_type, epoch, created, parent, ... (JSON-safe)
    loaded_at: float = field(default_factory=time.time)
    load_s: float = 0.0
    infer_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def infer(self, obs: dict) -> dict:
        # One inference at a time per model: adapters may keep state (queues, RNG) and share one device.
        with self.lock:
            self.infer_count += 1
            return self.policy.infer(obs)

    @property
    def inline(self) -> bool:
        """The policy says it answers in well under a millisecond without I/O (``infer_inline = True``: the
        scripted and no-op policies): the server may run it on its event loop instead of a worker thread."""
        return getattr(self.policy, "infer_inline", False) is True

    def try_infer(self, obs: dict) -> dict | None:
        """:meth:`infer` if the model is free now, else None (never waits: for the server's event loop)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            self.infer_count += 1
            return self.policy.infer(obs)
        finally:
            self.lock.release()

    def summary(self) -> dict[str, Any]:
        return {**self.info, "id": self.model_id, "loaded": True, "loaded_at": self.loaded_at,
                "load_s": round(self.load_s, 3), "infer_count": self.infer_count}


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def open_registry(models_dir: Path | None) -> Any | None:
    """The training registry, or None when there is no models dir or the training extra is not installed."""
    if models_dir is None:
        return None
    try:
        from h1_training.training.registry import ModelRegistry
    except ImportError as exc:
        log.warning("model registry unavailable (%s): serving built-in scripted models only", exc)
        return None
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    return ModelRegistry(Path(models_dir))


def _info_dict(info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    if hasattr(info, "__dataclass_fields__"):
        from dataclasses import asdict

        return _json_safe(asdict(info))
    return _json_safe(dict(info))


class ModelPool:
    def __init__(self, models_dir: Path | None, device: str = "cpu", max_loaded: int = 4,
                 default_model: str | None = None, registry: Any | None = None,
                 diffusion_sampling: str | None = None) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be >= 1")
        if diffusion_sampling:  # a bad value fails here, not at the first Diffusion model's load
            from h1_training.policy.models.diffusion import parse_sampling

            parse_sampling(diffusion_sampling)
        self.diffusion_sampling = diffusion_sampling  # "ddim:10": sampler of every Diffusion model loaded
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.device = device
        self.max_loaded = max_loaded
        self.registry = registry if registry is not None else open_registry(self.models_dir)
        self._lock = threading.RLock()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        state = self._read_state()
        self.epoch: int = int(state.get("epoch", 0))
        self.history: list[dict[str, Any]] = list(state.get("history", []))[-50:]
        self.default_id = self._pick_start_model(default_model, state)
        self.default_model = self.get(self.default_id)
        log.info("serving %r as default model (epoch %d)", self.default_id, self.epoch)

    # -- state ----------------------------------------------------------------------------------------------
    def _state_path(self) -> Path | None:
        return self.models_dir / STATE_FILE if self.models_dir is not None else None

    def _read_state(self) -> dict[str, Any]:
        path = self._state_path()
        if path is None or not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable %s (%s): epoch restarts from the registry", path, exc)
            return {}

    def _write_state(self) -> None:
        path = self._state_path()
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epoch": self.epoch, "default_model": self.default_id,
                                   "history": self.history[-50:]}, indent=2))
        tmp.replace(path)  # atomic: a crash never leaves half a state file

    def _pick_start_model(self, requested: str | None, state: dict[str, Any]) -> str:
        if requested:
            if requested in UNDEPLOYABLE:
                raise ValueError(f"{requested!r} is the benchmark's wire baseline and cannot be the default model")
            return requested
        if self.registry is not None:
            try:
                deployed = self.registry.deployed()
            except Exception as exc:  # a damaged registry must not keep the server from serving
                log.error("cannot read the deployed model from the registry: %s", exc)
                deployed = None
            if deployed is not None:
                if "epoch" not in state and getattr(deployed, "epoch", None) is not None:
                    self.epoch = int(deployed.epoch)
                return str(deployed.id)
        default = state.get("default_model")
        return default if default in BUILTIN_MODELS and default not in UNDEPLOYABLE else "scripted"

    # -- lookup ---------------------------------------------------------------------------------------------
    def known_ids(self) -> list[str]:
        ids = list(BUILTIN_MODELS)
        if self.registry is not None:
            try:
                ids += [str(m.id) for m in self.registry.list()]
            except Exception as exc:
                log.error("cannot list the model registry: %s", exc)
        return ids

    def describe(self, model_id: str) -> dict[str, Any]:
        with self._lock:
            loaded = self._loaded.get(model_id)
        if loaded is not None:
            out = loaded.summary()
        elif model_id in BUILTIN_MODELS:
            out = {"id": model_id, "policy_type": "scripted", "builtin": True, "loaded": False}
        else:
            out = {**self._registry_info(model_id), "id": model_id, "loaded": False}
        out["default"] = model_id == self.default_id
        return out

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(mid) for mid in self.known_ids()]

    def _registry_info(self, model_id: str) -> dict[str, Any]:
        if self.registry is None:
            raise UnknownModelError(f"unknown model {model_id!r} (no model registry)")
        try:
            return _info_dict(self.registry.get(model_id))
        except (KeyError, FileNotFoundError, ValueError) as exc:
            raise UnknownModelError(f"unknown model {model_id!r}; known: {self.known_ids()}") from exc

    def exists(self, model_id: str) -> bool:
        if model_id in BUILTIN_MODELS or model_id in self._loaded:
            return True
        try:
            self._registry_info(model_id)
            return True
        except UnknownModelError:
            return False

    # -- loading --------------------------------------------------------------------------------------------
    def _load(self, model_id: str) -> LoadedModel:
        t0 = time.perf_counter()
        if model_id in BUILTIN_MODELS:
            policy = BUILTIN_MODELS[model_id]()
            info: dict[str, Any] = {"policy_type": "scripted", "builtin": True, "epoch": 0}
        else:
            info = self._registry_info(model_id)
            path = Path(self.registry.path(model_id))
            if is_scripted_dir(path):
                policy = ScriptedPolicy.load(path, model_id=model_id)
            else:
                from h1_training.policy.models import load_policy  # torch only when a learned model is asked for

                policy = load_policy(path, device=self.device, diffusion_sampling=self.diffusion_sampling)
        model = LoadedModel(model_id, policy, info, load_s=time.perf_counter() - t0)
        log.info("loaded model %r (%s) in %.2f s", model_id, info.get("policy_type", "?"), model.load_s)
        return model

    def get(self, model_id: str | None = None) -> LoadedModel:
        """The loaded model ``model_id`` (the default when None), loading it if needed. Blocking."""
        with self._lock:
            mid = model_id or self.default_id
            if mid in self._loaded:
                self._loaded.move_to_end(mid)
                return self._loaded[mid]
            gate = self._loading.setdefault(mid, threading.Lock())
        with gate:  # one load per id at a time; others wait for it instead of loading twice
            with self._lock:
                if mid in self._loaded:
                    return self._loaded[mid]
            model = self._load(mid)
            with self._lock:
                self._loaded[mid] = model
                self._evict()
                self._loading.pop(mid, None)
            return model

    def _evict(self) -> None:
        while len(self._loaded) > self.max_loaded:
            victim = next((m for m in self._loaded if m != self.default_id), None)
            if victim is None:
                return
            log.info("unloading model %r (more than %d loaded)", victim, self.max_loaded)
            del self._loaded[victim]

    def resolve(self, model_id: str | None) -> tuple[LoadedModel, int | None]:
        """(model, served epoch) for a session: the default model and the epoch it was deployed as, read together
        so a swap in between cannot pair new weights with the old epoch; a pinned model reports an epoch only
        while it is the default."""
        if model_id is None:
            with self._lock:
                return self.default_model, self.epoch
        model = self.get(model_id)
        with self._lock:
            return model, (self.epoch if model_id == self.default_id else None)

    def peek(self, model_id: str | None) -> tuple[LoadedModel, int | None] | None:
        """:meth:`resolve` when the model is loaded already, else None (never loads, never blocks for long)."""
        with self._lock:
            if model_id is None:
                return self.default_model, self.epoch
            model = self._loaded.get(model_id)
            if model is None:
                return None
            self._loaded.move_to_end(model_id)
            return model, (self.epoch if model_id == self.default_id else None)

    def loaded_ids(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    # -- hot swap -------------------------------------------------------------------------------------------
    def swap_default(self, model_id: str, reason: str = "deploy") -> int:
        """Load ``model_id`` fully, then make it the default and bump the epoch. Returns the new epoch.

        Raises (and changes nothing) when the model cannot be loaded, or is the benchmark's no-op (its zero
        joint targets would drive a robot's arms to zero)."""
        if model_id in UNDEPLOYABLE:
            raise ValueError(f"{model_id!r} is the benchmark's wire baseline and cannot be the default model")
        model = self.get(model_id)
        if self.registry is not None and model_id not in BUILTIN_MODELS:
            self.registry.deploy(model_id)
        with self._lock:
            previous = self.default_id
            self.default_id = model_id
            self.default_model = model
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "model_id": model_id, "previous": previous,
                                 "reason": reason, "time": time.time()})
            self._write_state()
            epoch = self.epoch
        log.info("default model %r -> %r (%s); epoch %d", previous, model_id, reason, epoch)
        return epoch
