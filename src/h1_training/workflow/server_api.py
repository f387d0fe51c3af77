"""The GPU server's HTTP API as the workflow manager uses it (``policy/server.py`` documents the endpoints),
with a backoff that spaces out attempts while the server is down instead of hammering it or giving up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from h1_training.policy.client import PolicyClientError, ServerUnavailable, http_json

__all__ = ["Backoff", "ServerApi", "ServerUnavailable", "ApiError"]


class ApiError(RuntimeError):
    """The server answered with an HTTP error; ``status`` is its code (404: unknown job or model)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Backoff:
    """Exponential backoff: ``failed(now)`` schedules the next attempt, ``ok()`` resets it."""

    initial_s: float = 1.0
    max_s: float = 30.0
    factor: float = 2.0
    delay_s: float = 0.0
    next_at: float = 0.0
    failures: int = 0

    def ready(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> float:
        self.failures += 1
        self.delay_s = self.initial_s if self.failures == 1 else min(self.max_s, self.delay_s * self.factor)
        self.next_at = now + self.delay_s
        return self.delay_s

    def ok(self) -> None:
        self.failures, self.delay_s, self.next_at = 0, 0.0, 0.0


def _status_of(exc: PolicyClientError) -> int:
    # http_json's message: "<METHOD> <url>: HTTP <code> <body>"
    text = str(exc)
    marker = ": HTTP "
    if marker in text:
        try:
            return int(text.split(marker, 1)[1].split()[0])
        except (ValueError, IndexError):
            pass
    return 0


class ServerApi:
    def __init__(self, url: str, api_key: str = "", timeout_s: float = 3.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"server url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.api_key = api_key or None
        self.timeout_s = timeout_s

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):]

    def _call(self, path: str, method: str = "GET", body: Any = None) -> Any:
        try:
            return http_json(self.url, None, path, method=method, body=body, api_key=self.api_key,
                             timeout=self.timeout_s)
        except ServerUnavailable:
            raise
        except PolicyClientError as exc:
            raise ApiError(str(exc), _status_of(exc)) from exc

    def training_status(self) -> dict[str, Any]:
        return self._call("/training_status")

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._call("/jobs").get("jobs", []))

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call(f"/jobs/{quote(job_id, safe='')}")

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("/train", "POST", request)

    def job_action(self, job_id: str, action: str) -> dict[str, Any]:
        if action not in ("cancel", "pause", "resume"):
            raise ValueError(f"unknown job action {action!r}")
        return self._call(f"/jobs/{quote(job_id, safe='')}/{action}", "POST", {})

    def models(self) -> dict[str, Any]:
        return self._call("/models")

    def deploy(self, model_id: str) -> dict[str, Any]:
        return self._call(f"/models/{quote(model_id, safe='')}/deploy", "POST", {})
