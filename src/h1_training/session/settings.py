"""The HIL session's settings (no rclpy): node parameters and the seed's ``training_config.yaml`` merged into
one :class:`SessionSettings`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from h1_training.session.sync import SyncConfig


@dataclass
class SessionSettings:
    policy_host: str = "127.0.0.1"
    policy_port: int = 8000
    api_key: str = ""
    model: str = ""                       # pin a model id on the server ("" = its deployed default)
    save_dir: str = "data/h1_data_auto"   # must be the recorder's save_dir (the recorder's paths win, see sync)
    rsync_target: str = ""                # "" = no sync: the data stays in save_dir
    prompt: str = ""
    ask_label: bool = True
    last_seen_epoch: int = -1             # weights with an epoch <= this are not offered
    poll_period_s: float = 1.0
    poll_timeout_s: float = 2.0
    control_rate_hz: float = 50.0
    replan_steps: int = 25                # rows executed before the next chunk is requested (0 = whole chunk)
    max_chunk_rows: int = 0               # execute at most this many rows of a chunk (0 = all)
    skip_elapsed_rows: bool = True
    connect_timeout_s: float = 3.0
    connect_attempts: int = 2
    inference_timeout_s: float = 2.0
    state_timeout_s: float = 0.5
    max_track_resumes: int = 3
    sync_attempt_timeout_s: float = 1800.0
    sync_io_timeout_s: float = 30.0
    sync_attempts: int = 3
    sync_bwlimit_kbps: int = 0
    startup_timeout_s: float = 30.0
    key_reply_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= int(self.policy_port) <= 65535:
            raise ValueError(f"policy server port must be 1..65535, got {self.policy_port}")
        if not self.policy_host.strip():
            raise ValueError("policy server host is empty")
        if not self.save_dir.strip():
            raise ValueError("save_dir is empty")
        positive = ("poll_period_s", "poll_timeout_s", "control_rate_hz", "connect_timeout_s",
                    "inference_timeout_s", "state_timeout_s", "startup_timeout_s", "key_reply_timeout_s")
        for name in positive:
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.replan_steps < 0 or self.max_chunk_rows < 0 or self.max_track_resumes < 0:
            raise ValueError("replan_steps, max_chunk_rows and max_track_resumes must be >= 0")
        if self.connect_attempts < 1:
            raise ValueError("connect_attempts must be >= 1")

    def sync_config(self) -> SyncConfig:
        return SyncConfig(target=self.rsync_target, io_timeout_s=self.sync_io_timeout_s,
                          attempt_timeout_s=self.sync_attempt_timeout_s, max_attempts=self.sync_attempts,
                          bwlimit_kbps=self.sync_bwlimit_kbps)


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


# Settings a parameter leaves to the config file when it has this "unset" value.
FROM_CONFIG_WHEN_UNSET: dict[str, Any] = {"policy_host": "", "policy_port": 0, "api_key": "", "save_dir": "",
                                          "rsync_target": ""}


def resolve_settings(params: dict[str, Any], config: dict[str, Any] | None = None) -> SessionSettings:
    """SessionSettings from node parameters and ``load_training_config`` values: a parameter that is set wins,
    an unset one (FROM_CONFIG_WHEN_UNSET) takes the config file's value, else the default. The API key may also
    come from ``$H1_POLICY_API_KEY``; ``sync_enabled: false`` turns sync off whatever the target."""
    config = config or {}
    fields = SessionSettings.__dataclass_fields__
    kw = {k: v for k, v in params.items() if k in fields}
    for name, unset in FROM_CONFIG_WHEN_UNSET.items():
        if kw.get(name, unset) == unset:
            kw.pop(name, None)
            if name in config:
                kw[name] = config[name]
    if not kw.get("api_key"):
        kw["api_key"] = os.environ.get("H1_POLICY_API_KEY", "")
    if not params.get("sync_enabled", True):
        kw["rsync_target"] = ""
    return SessionSettings(**kw)
