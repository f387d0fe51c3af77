"""The HIL session's settings (no rclpy): :class:`SessionSettings` is also hil_session's parameter declaration;
:func:`resolve_settings` merges it with the seed's ``training_config.yaml``."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from h1_training.params import build, param
from h1_training.session.sync import SyncConfig

# What a setting left to the config file takes when the file does not set it either (FROM_CONFIG).
FALLBACK: dict[str, Any] = {"policy_host": "127.0.0.1", "policy_port": 8000, "save_dir": "data/h1_data_auto",
                            "rsync_target": ""}
API_KEY_ENV = "H1_POLICY_API_KEY"  # the API key when neither the parameter nor the config file gives one


@dataclass
class SessionSettings:
    """The session's settings. The ``param`` fields are also hil_session's ROS parameters (declared here once,
    see nodes/common.py); ``key_reply_timeout_s`` is fixed.

    Settings taken from the config file (FROM_CONFIG: ``policy_host``, ``policy_port``, ``api_key``,
    ``save_dir``, ``rsync_target``) have an *unset* default ("" or 0): left unset, :func:`resolve_settings`
    takes the seed's ``training_config.yaml`` value, else FALLBACK (the API key: ``$H1_POLICY_API_KEY``); set,
    the parameter wins. What the runner gets is resolved: none of them unset.
    """

    policy_host: str = param("", f"policy server host (\"\" = config file, else {FALLBACK['policy_host']})")
    policy_port: int = param(0, f"policy server port (0 = config file, else {FALLBACK['policy_port']})", min=0,
        max=65535)
    api_key: str = param("", f"policy server API key (\"\" = config file, else ${API_KEY_ENV})")
    model: str = param("", "pin a model id on the server (\"\" = the deployed default)")
    save_dir: str = param("", "the recorder's save_dir, synced from (\"\" = config file, else "
        f"{FALLBACK['save_dir']}); the recorder's own file paths win when they differ")
    rsync_target: str = param("", "rsync destination of each epoch (\"\" = config file; empty there = no sync)")
    sync_enabled: bool = param(True, "false: never sync (the data stays in save_dir)")
    prompt: str = param("", "task text sent to the policy and stored with each episode")
    ask_label: bool = param(True, "after 's', ask whether the policy succeeded (LABELING) before damping")
    collection_mode: str = param("hil", "what the next episode records: hil (policy + human corrections), policy "
        "(evaluation rollouts), kinesthetic (arm in damping, no policy: demonstrations by hand), teleoperation "
        "(the arm follows teleop/arm_target, clamped); takes effect at the next episode",
        choices=("hil", "policy", "kinesthetic", "teleoperation"))
    teleop_timeout_s: float = param(0.3, "teleoperation watchdog: no valid teleop/arm_target for this long puts "
        "the arm in HOLD until targets come back [s]", min=0.05, max=5.0)
    teleop_start_wait_s: float = param(3.0, "a teleoperation episode starts only when a target arrived within "
        "teleop_timeout_s; wait this long for one [s]", min=0.0, max=60.0)
    last_seen_epoch: int = param(-1, "offer only weights with a newer epoch (resume a session)", min=-1,
        read_only=True)
    poll_period_s: float = param(1.0, "GET /training_status period while WAITING [s]", min=0.1, max=60.0)
    poll_timeout_s: float = param(2.0, "timeout of one /training_status request [s]", min=0.1, max=30.0)
    control_rate_hz: float = param(50.0, "rate the policy's action rows are published at [Hz] (the arm's command "
        "watchdog needs one at least every 100 ms)", min=11.0, max=500.0)
    replan_steps: int = param(25, "rows of a chunk executed before the next chunk is requested (0 = when the "
        "chunk runs out)", min=0, max=10000)
    max_chunk_rows: int = param(0, "execute at most this many rows of each chunk (0 = all)", min=0, max=10000)
    blend_steps: int = param(10, "ticks over which a new chunk is blended in linearly from the previous one at the "
        "switch (0 = switch at once; see session/policy_loop.py)", min=0, max=1000)
    skip_elapsed_rows: bool = param(True, "start a new chunk at the row for now (rows computed for the time the "
        "server took are skipped)")
    connect_timeout_s: float = param(3.0, "WebSocket connect timeout per attempt [s]", min=0.1, max=60.0)
    connect_attempts: int = param(2, "connect attempts before the policy counts as unreachable", min=1, max=10)
    inference_timeout_s: float = param(2.0, "no reply to an inference within this: the policy fails [s]",
        min=0.05, max=60.0)
    state_timeout_s: float = param(0.5, "joint_states older than this: no observation, the policy fails [s]",
        min=0.02, max=10.0)
    max_track_resumes: int = param(3, "TRACK re-enabled after a command-watchdog HOLD at most this often per "
        "episode while the policy is healthy (then the episode fails)", min=0, max=100)
    startup_timeout_s: float = param(30.0, "wait this long for the arm and recorder services at start [s]",
        min=0.0, max=600.0)
    sync_attempts: int = param(3, "rsync attempts per epoch", min=1, max=20)
    sync_io_timeout_s: float = param(30.0, "rsync --timeout: no data moved this long [s]", min=1.0, max=3600.0)
    sync_attempt_timeout_s: float = param(1800.0, "wall-clock limit of one rsync run [s]", min=1.0, max=86400.0)
    sync_bwlimit_kbps: int = param(0, "rsync bandwidth limit [KB/s] (0 = none)", min=0, max=10_000_000)
    key_reply_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        # "" / 0 are "unset" (FROM_CONFIG); what is set must be usable
        if not 0 <= int(self.policy_port) <= 65535:
            raise ValueError(f"policy server port must be 1..65535, got {self.policy_port}")
        for name in ("policy_host", "save_dir"):
            value = getattr(self, name)
            if value and not value.strip():
                raise ValueError(f"{name} is blank")
        positive = ("poll_period_s", "poll_timeout_s", "control_rate_hz", "connect_timeout_s",
                    "inference_timeout_s", "state_timeout_s", "key_reply_timeout_s")
        for name in positive:
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        if not (math.isfinite(self.startup_timeout_s) and self.startup_timeout_s >= 0):
            raise ValueError(f"startup_timeout_s must be >= 0, got {self.startup_timeout_s}")
        if min(self.replan_steps, self.max_chunk_rows, self.max_track_resumes, self.blend_steps) < 0:
            raise ValueError("replan_steps, max_chunk_rows, max_track_resumes and blend_steps must be >= 0")
        if self.connect_attempts < 1:
            raise ValueError("connect_attempts must be >= 1")

    def sync_config(self) -> SyncConfig:
        return SyncConfig(target=self.rsync_target, io_timeout_s=self.sync_io_timeout_s,
                          attempt_timeout_s=self.sync_attempt_timeout_s, max_attempts=self.sync_attempts,
                          bwlimit_kbps=self.sync_bwlimit_kbps)


# Settings a parameter leaves to the config file when it holds its unset default ("" or 0).
FROM_CONFIG = ("policy_host", "policy_port", "api_key", "save_dir", "rsync_target")
_UNSET = {f.name: f.default for f in dataclasses.fields(SessionSettings) if f.name in FROM_CONFIG}


def load_training_config(path: str | Path) -> dict[str, Any]:
    """The seed's ``training_config.yaml`` as SessionSettings fields (only the keys it sets).

    Keys: ``policy_server.host``, ``policy_server.port``, ``rsync.target``, ``save_dir`` (the seed's), plus
    ``policy_server.api_key``. ``robot.head_camera_server_ip`` belongs to camera_node (its ``head_address``).
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"cannot read config {p}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"config {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config {p} must be a mapping of sections, got {type(data).__name__}")
    out: dict[str, Any] = {}

    def section(name: str) -> dict:
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise ValueError(f"config {p}: '{name}' must be a mapping, got {value!r}")
        return value

    server = section("policy_server")
    if server.get("host"):
        out["policy_host"] = str(server["host"])
    if "port" in server:
        port = server["port"]
        if isinstance(port, bool) or not isinstance(port, int):
            raise ValueError(f"config {p}: policy_server.port must be an integer, got {port!r}")
        out["policy_port"] = port
    if server.get("api_key"):
        out["api_key"] = str(server["api_key"])
    rsync = section("rsync")
    if "target" in rsync:
        out["rsync_target"] = "" if rsync["target"] is None else str(rsync["target"])
    if data.get("save_dir"):
        out["save_dir"] = str(data["save_dir"])
    return out


def resolve_settings(params: SessionSettings | dict[str, Any], config: dict[str, Any] | None = None
                     ) -> SessionSettings:
    """The resolved SessionSettings from the parameters (a SessionSettings, or values by name) and
    ``load_training_config`` values: a FROM_CONFIG setting that is set wins, an unset one takes the config file's
    value, else FALLBACK (the API key: ``$H1_POLICY_API_KEY``). ``sync_enabled: false`` turns sync off whatever
    the target. Raises ValueError when the result is unusable (a config file's port out of range)."""
    base = params if isinstance(params, SessionSettings) else build(SessionSettings, params)
    config = config or {}
    kw: dict[str, Any] = {}
    for name, unset in _UNSET.items():
        if getattr(base, name) == unset:
            if name in config:
                kw[name] = config[name]
            elif name in FALLBACK:
                kw[name] = FALLBACK[name]
    if not kw.get("api_key", base.api_key):
        kw["api_key"] = os.environ.get(API_KEY_ENV, "")
    if not base.sync_enabled:
        kw["rsync_target"] = ""
    settings = dataclasses.replace(base, **kw)
    if not 1 <= int(settings.policy_port) <= 65535:
        raise ValueError(f"policy server port must be 1..65535, got {settings.policy_port}")
    if not settings.policy_host.strip():
        raise ValueError("policy server host is empty")
    if not settings.save_dir.strip():
        raise ValueError("save_dir is empty")
    return settings
