"""Drive Debian's chromium from Python through ``web_ui/tools/driver.mjs`` (playwright-core): one JSON command per
line. Used by the web app's browser tests and ``h1-training bench web``.

    with Browser() as b:
        b.goto("http://127.0.0.1:8080/")
        b.click("#key-y")
        b.wait_text("#session-state", "READY")
        b.screenshot("shot.png")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DRIVER = REPO / "web_ui" / "tools" / "driver.mjs"
CHROMIUM = os.environ.get("H1_CHROMIUM", "/usr/bin/chromium")


class BrowserError(RuntimeError):
    pass


def browser_missing() -> str | None:
    """Why a browser cannot run here (None: it can)."""
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install -y chromium, or set H1_CHROMIUM)"
    if shutil.which("node") is None:
        return "no node (apt-get install -y nodejs)"
    if not (REPO / "web_ui" / "node_modules" / "playwright-core").is_dir():
        return "web_ui/node_modules has no playwright-core (cd web_ui && npm install)"
    return None


class Browser:
    def __init__(self, timeout: float = 60.0) -> None:
        why = browser_missing()
        if why:
            raise BrowserError(why)
        self.timeout = timeout
        self.proc = subprocess.Popen(["node", str(DRIVER), "--chromium", CHROMIUM], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=REPO / "web_ui")
        self._read()  # "ready"

    def _read(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise BrowserError(f"the browser driver stopped: {err.strip()[-2000:]}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise BrowserError(reply.get("error", "failed"))
        return reply.get("value")

    def do(self, op: str, **kw: Any) -> Any:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def goto(self, url: str, until: str = "load") -> float:
        return self.do("goto", url=url, until=until)

    def click(self, sel: str, timeout_ms: int = 10000) -> None:
        self.do("click", sel=sel, timeout=timeout_ms)

    def fill(self, sel: str, value: Any) -> None:
        self.do("fill", sel=sel, value=value)

    def select(self, sel: str, value: str) -> None:
        self.do("select", sel=sel, value=value)

    def text(self, sel: str) -> str:
        return self.do("text", sel=sel) or ""

    def wait_text(self, sel: str, text: str, timeout_ms: int = 10000) -> str:
        return self.do("wait_text", sel=sel, text=text, timeout=timeout_ms) or ""

    def wait_js(self, js: str, timeout_ms: int = 10000, arg: Any = None) -> Any:
        return self.do("wait_js", js=js, timeout=timeout_ms, arg=arg)

    def eval(self, js: str) -> Any:
        return self.do("eval", js=js)

    def screenshot(self, path: str | Path, full: bool = True) -> Path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.do("screenshot", path=str(Path(path).resolve()), full=full)
        return Path(path)

    def console(self) -> list[str]:
        return self.do("console")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
