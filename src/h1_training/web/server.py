"""Run the ASGI app on uvicorn in a background thread (the ROS node spins in the main thread)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI


class WebServer:
    """``start()`` returns once the socket listens (``port`` is then the real one, also for port 0)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.host = host
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=2, lifespan="on", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.port = port

    def start(self, timeout: float = 20.0) -> int:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the web server did not start on {self.host}:{self.port} (port in use?)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the web server did not start on {self.host}:{self.port} in {timeout:.0f} s")
            time.sleep(0.02)
        self.port = int(self.server.servers[0].sockets[0].getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self.app.state.stopping = True  # live streams end within half a second
        self.server.should_exit = True
        self.thread.join(timeout)
