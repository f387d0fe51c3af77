"""Our policy client (robot side): the openpi WebSocket protocol with timeouts, bounded reconnects and clear errors.

Works against ``h1-training serve`` and against an openpi ``serve_policy.py`` (same wire, ``policy/codec.py``).
Unlike openpi-client's ``WebsocketClientPolicy`` it never waits forever: connecting, each request and each
reconnect have a time limit, and a dead server becomes :class:`ServerUnavailable` after a bounded number of
attempts with exponential backoff.

    client = PolicyClient("127.0.0.1", 8000, api_key=None, model=None)   # model="<id>" pins a model (A/B)
    client.connect()                    # -> metadata dict; raises ServerUnavailable
    result = client.infer(obs)          # {"actions": [H, 14] float32, "server_timing": {...}, "model_id": ...}
    get_training_status("127.0.0.1", 8000)   # {"ready": bool, "epoch": int, ...}
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import websockets
from websockets.sync.client import ClientConnection, connect

from h1_training.backoff import Backoff
from h1_training.policy import codec

log = logging.getLogger("h1_training.policy.client")


class PolicyClientError(RuntimeError):
    """Base class of the client's errors."""


class ServerUnavailable(PolicyClientError):
    """The server cannot be reached (refused, timed out, dropped) after the allowed attempts."""


class ServerError(PolicyClientError):
    """The server answered a request with an error frame (its traceback is in ``traceback``)."""

    def __init__(self, traceback_text: str) -> None:
        last = traceback_text.strip().splitlines()[-1] if traceback_text.strip() else "unknown error"
        super().__init__(f"policy server error: {last}")
        self.traceback = traceback_text


def _base_uri(host: str, port: int | None) -> str:
    if host.startswith(("ws://", "wss://")):
        return host if port is None else f"{host}:{port}"
    return f"ws://{host}:{port if port is not None else 8000}"


class PolicyClient:
    def __init__(self, host: str = "127.0.0.1", port: int | None = 8000, *, api_key: str | None = None,
                 model: str | None = None, connect_timeout: float = 5.0, request_timeout: float = 10.0,
                 max_attempts: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 5.0,
                 max_message_bytes: int | None = 64 * 1024 * 1024) -> None:
        if connect_timeout <= 0 or request_timeout <= 0 or max_attempts < 1:
            raise ValueError("timeouts must be > 0 and max_attempts >= 1")
        uri = _base_uri(host, port)
        if model:
            uri += ("&" if "?" in uri else ("?" if uri.endswith("/") else "/?")) + urllib.parse.urlencode(
                {"model": model})
        self.uri = uri
        self.api_key = api_key
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_message_bytes = max_message_bytes
        self._ws: ClientConnection | None = None
        self._packer = codec.Packer()
        self.metadata: dict[str, Any] = {}
        self.reconnects = 0

    # -- connection -----------------------------------------------------------------------------------------
    def _connect_once(self) -> None:
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        # websockets >= 17.1 wants connect() used as a context manager (else a DeprecationWarning); the
        # connection outlives this call, so enter it here and leave it in close() (ws.close() is its __exit__).
        ws = connect(self.uri, open_timeout=self.connect_timeout, close_timeout=2.0, compression=None,
                     max_size=self.max_message_bytes, additional_headers=headers).__enter__()
        try:
            first = ws.recv(timeout=self.connect_timeout)
            if isinstance(first, str):
                raise ServerError(first)
            meta = codec.unpackb(first)
            if not isinstance(meta, dict):
                raise PolicyClientError(f"server metadata is not a map: {type(meta).__name__}")
        except BaseException:
            ws.close()
            raise
        self._ws, self.metadata = ws, meta

    def connect(self) -> dict[str, Any]:
        """Connect (bounded attempts with backoff); returns the server's metadata."""
        self.close()
        backoff = Backoff(self.backoff_s, self.max_backoff_s)
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._connect_once()
                log.info("connected to %s (model %s)", self.uri, self.metadata.get("model_id"))
                return self.metadata
            except websockets.InvalidStatus as exc:  # 401/404: retrying will not help
                status = exc.response.status_code
                body = exc.response.body.decode(errors="replace").strip()
                raise PolicyClientError(f"{self.uri} refused the connection: HTTP {status} {body}") from exc
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                last = exc
                log.warning("policy server %s not reachable (attempt %d/%d): %s", self.uri, attempt,
                            self.max_attempts, exc)
                if attempt < self.max_attempts:
                    time.sleep(backoff.next_delay())
        raise ServerUnavailable(f"policy server {self.uri} unreachable after {self.max_attempts} attempts: {last}")

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            finally:
                self._ws = None

    def __enter__(self) -> PolicyClient:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- requests -------------------------------------------------------------------------------------------
    def _request(self, payload: bytes) -> dict[str, Any]:
        assert self._ws is not None
        self._ws.send(payload)
        reply = self._ws.recv(timeout=self.request_timeout)
        if isinstance(reply, str):
            self.close()  # the server closes after an error frame; the next infer reconnects
            raise ServerError(reply)
        result = codec.unpackb(reply)
        if not isinstance(result, dict) or "actions" not in result:
            raise PolicyClientError("server reply has no 'actions'")
        return result

    def infer(self, obs: dict) -> dict[str, Any]:
        """One lockstep request. Reconnects (bounded) when the connection dropped, and retries the request once
        on the new connection; a server-side error is raised as :class:`ServerError`, never retried."""
        payload = self._packer.pack(obs)
        if self._ws is None:
            self.connect()
        try:
            return self._request(payload)
        except TimeoutError as exc:
            self.close()  # a late reply would otherwise answer the next request
            raise ServerUnavailable(f"no reply from {self.uri} within {self.request_timeout} s") from exc
        except (websockets.ConnectionClosed, OSError) as exc:
            log.warning("connection to %s lost (%s); reconnecting", self.uri, exc)
            self.reconnects += 1
            self.connect()
            try:
                return self._request(payload)
            except TimeoutError as exc2:
                self.close()
                raise ServerUnavailable(f"no reply from {self.uri} within {self.request_timeout} s") from exc2
            except (websockets.ConnectionClosed, OSError) as exc2:
                self.close()
                raise ServerUnavailable(f"policy server {self.uri} dropped the connection again: {exc2}") from exc2

    def reset(self) -> None:
        """The openpi policy interface; the server keeps no per-session state."""


# -- HTTP -------------------------------------------------------------------------------------------------------
def _http_base(host: str, port: int | None) -> str:
    if host.startswith(("http://", "https://")):
        return host.rstrip("/") if port is None else f"{host.rstrip('/')}:{port}"
    if host.startswith(("ws://", "wss://")):
        host = host.split("://", 1)[1].split("/", 1)[0]
        return f"http://{host}" if port is None else f"http://{host.split(':')[0]}:{port}"
    return f"http://{host}:{port if port is not None else 8000}"


def http_json(host: str, port: int | None, path: str, *, method: str = "GET", body: Any = None,
              api_key: str | None = None, timeout: float = 3.0) -> Any:
    """Call the server's JSON API; raises PolicyClientError with the server's message on an HTTP error and
    ServerUnavailable when it cannot be reached."""
    url = _http_base(host, port) + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Api-Key {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise PolicyClientError(f"{method} {url}: HTTP {exc.code} {detail}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ServerUnavailable(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc
    return json.loads(raw) if raw.strip() else None


def get_training_status(host: str, port: int | None = 8000, *, api_key: str | None = None,
                        timeout: float = 2.0) -> dict[str, Any]:
    """``GET /training_status`` -> ``{"ready": bool, "epoch": int, ...}`` (what the H1 session polls)."""
    status = http_json(host, port, "/training_status", api_key=api_key, timeout=timeout)
    if not isinstance(status, dict) or "ready" not in status or "epoch" not in status:
        raise PolicyClientError(f"unexpected /training_status answer: {status!r}")
    return status


def healthy(host: str, port: int | None = 8000, timeout: float = 2.0) -> bool:
    url = _http_base(host, port) + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False
