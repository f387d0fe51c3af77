"""``hil_console``: the operator's keyboard for ``hil_session`` (the seed's Controls), in its own terminal.

    hil_console                       # single keys: y, n, s, e; Ctrl+C = the seed's emergency exit; q = quit
    printf 'y\\ns\\n' | hil_console    # stdin not a terminal: one key (or command) per line

Each key is sent to ``hil_session/command`` (SessionCommand); a key that does nothing in the current state is
answered with the reason. The session's lines (``hil_session/status``: ``lines`` of each transition) are printed
as they come. Ctrl+C sends the interrupt (policy stopped, arm HOLD, episode saved, the session exits) and waits
for the session to stop; a second Ctrl+C quits the console at once. Line mode also takes ``label 1 [note]`` /
``label 0 [note]`` (LabelEpisode) and ``ctrl+c``.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from h1_training.nodes.common import STATUS_QOS, ParamsMixin, ServiceCallError, call_service
from h1_training.params import param
from h1_training_interfaces.msg import SessionStatus
from h1_training_interfaces.srv import LabelEpisode, SessionCommand

KEYS = ("y", "n", "s", "e")
INTERRUPT = "ctrl+c"
HELP = "keys: y = yes, n = no, s = stop (damping), e = end and save, Ctrl+C = save and exit, q = quit this console"


@dataclass
class HilConsoleNodeParams:
    """The parameters of this node: the one declaration (see nodes/common.py)."""

    session: str = param("hil_session", "name of the hil_session node (its command/label services, status)")
    call_timeout_s: float = param(15.0, "how long to wait for the session's reply to a key [s]", min=1.0, max=600.0)
    connect_timeout_s: float = param(60.0, "how long to wait for the session at start [s]", min=1.0, max=3600.0)


class HilConsole(ParamsMixin, Node):
    PARAMS = HilConsoleNodeParams

    def __init__(self, out: TextIO = sys.stdout) -> None:
        super().__init__("hil_console")
        self.declare_specs()
        self.out = out
        name = self.p["session"].strip("/")
        self.command_client = self.create_client(SessionCommand, f"{name}/command")
        self.label_client = self.create_client(LabelEpisode, f"{name}/label")
        self.create_subscription(SessionStatus, f"{name}/status", self._on_status, STATUS_QOS)
        self._lock = threading.Lock()
        self._seq = -1
        self._state = ""
        self._error = ""
        self.stopped = threading.Event()
        self.first_status = threading.Event()
        self.interrupt_sent = False

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def _on_status(self, msg: SessionStatus) -> None:
        self.first_status.set()
        new_lines = msg.lines_seq != self._seq
        if new_lines:
            self._seq = msg.lines_seq
            for line in msg.lines:
                self.say(line)
        if msg.state_name != self._state:
            self._state = msg.state_name
            if not new_lines or not msg.lines:
                self.say(f"[{msg.state_name}] {msg.prompt}")
        if msg.last_error != self._error:
            self._error = msg.last_error
            if msg.last_error and not any(msg.last_error.split(": ", 1)[-1] in line for line in msg.lines):
                self.say(f"  ! {msg.last_error}")
        if msg.state == SessionStatus.STATE_STOPPED:
            self.stopped.set()

    def _call(self, client: Any, request: Any) -> Any | None:
        if not client.wait_for_service(timeout_sec=2.0):
            self.say(f"  ! {client.srv_name} is not available: is hil_session running?")
            return None
        try:
            return call_service(client, request, self.p["call_timeout_s"])
        except ServiceCallError as exc:
            self.say(f"  ! {exc}")
            return None

    def send_key(self, key: str) -> None:
        reply = self._call(self.command_client, SessionCommand.Request(key=key))
        if reply is not None and not reply.accepted:
            self.say(f"  ({reply.message})")

    def send_interrupt(self) -> None:
        self.interrupt_sent = True
        self.send_key(INTERRUPT)

    def send_label(self, success: int, note: str) -> None:
        reply = self._call(self.label_client, LabelEpisode.Request(success=success, note=note))
        if reply is not None:
            self.say(f"  ({reply.message})" if reply.accepted else f"  (label refused: {reply.message})")

    def handle_line(self, line: str) -> bool:
        """One command in line mode; False = quit the console."""
        words = line.strip().split(maxsplit=2)
        if not words:
            return True
        head = words[0].lower()
        if head in ("q", "quit", "exit"):
            return False
        if head in KEYS:
            self.send_key(head)
        elif head in ("ctrl+c", "ctrl-c", "^c", "\x03"):
            self.send_interrupt()
        elif head == "label" and len(words) >= 2 and words[1] in ("0", "1"):
            self.send_label(int(words[1]), words[2] if len(words) > 2 else "")
        else:
            self.say(f"  (unknown command {line.strip()!r}; {HELP}; in line mode also 'label 0|1 [note]')")
        return True


def _read_keys(console: HilConsole, interrupted: threading.Event) -> None:
    """Terminal: single keys in cbreak mode (Ctrl+C still raises SIGINT); restored on any exit."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while not console.stopped.is_set():
            if interrupted.is_set():
                return
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            ch = os.read(fd, 1).decode(errors="replace")
            if ch == "" or ch == "\x04":  # EOF / Ctrl+D
                return
            key = ch.lower()
            if key == "\x03":
                interrupted.set()
                return
            if key == "q":
                return
            if key in KEYS:
                console.send_key(key)
            elif key.strip():
                console.say(f"  ({HELP})")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_lines(console: HilConsole, interrupted: threading.Event) -> None:
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, name="stdin", daemon=True).start()
    while not console.stopped.is_set() and not interrupted.is_set():
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line is None or not console.handle_line(line):
            return


def main(args: list[str] | None = None) -> int:
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        console = HilConsole()
        executor = SingleThreadedExecutor()
        executor.add_node(console)
        spinner = threading.Thread(target=executor.spin, name="executor", daemon=True)
        spinner.start()
        interrupted = threading.Event()
        presses: list[int] = []

        def on_signal(_signum: int, _frame: Any) -> None:
            presses.append(1)
            interrupted.set()
            if len(presses) > 1:
                console.stopped.set()  # second Ctrl+C: quit the console now

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            name = console.p["session"].strip("/")
            if not console.command_client.wait_for_service(timeout_sec=1.0):
                console.say(f"waiting for {name} ...")
                if not console.command_client.wait_for_service(timeout_sec=console.p["connect_timeout_s"]):
                    console.say(f"{name}/command not available after {console.p['connect_timeout_s']:g} s")
                    return 1
            # keys only once the session's status is seen: what they do depends on it
            if not console.first_status.wait(console.p["connect_timeout_s"]):
                console.say(f"no status from {name} yet; sending keys anyway")
            console.say(HELP)
            if sys.stdin.isatty():
                _read_keys(console, interrupted)
            else:
                _read_lines(console, interrupted)
            if interrupted.is_set() and not console.stopped.is_set() and not console.interrupt_sent:
                console.say("Ctrl+C: asking the session to save and exit (Ctrl+C again quits this console)")
                console.send_interrupt()
            if console.interrupt_sent:
                deadline = time.monotonic() + console.p["call_timeout_s"] * 2
                while not console.stopped.wait(0.1) and time.monotonic() < deadline:
                    pass
            if console.stopped.is_set() and len(presses) < 2:
                # the session says "Saved: ..." after STOPPED: print until it is gone (or 5 s)
                deadline = time.monotonic() + 5.0
                while console.command_client.service_is_ready() and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            console.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
