"""Fan-out of the backend's changes to every open live stream (Server-Sent Events), without blocking the backend.

The backend calls :meth:`LiveHub.publish` from its own threads; each stream has a :class:`Subscriber` on the
app's event loop holding at most one pending payload per topic (a slow page skips to the newest state instead
of queueing a backlog), except for ``APPEND_TOPICS`` whose points accumulate so a curve never loses a point.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from h1_training.web.backend import APPEND_TOPICS


class Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: dict[str, dict[str, Any]] = {}
        self.event = asyncio.Event()

    def push(self, topic: str, payload: dict[str, Any]) -> None:  # on the loop
        if topic in APPEND_TOPICS and topic in self.pending and \
                self.pending[topic].get("job_id") == payload.get("job_id") and not payload.get("reset"):
            merged = dict(payload)
            merged["points"] = list(self.pending[topic].get("points", [])) + list(payload.get("points", []))
            if self.pending[topic].get("reset"):
                merged["reset"] = True  # the page must still drop the older curve
            self.pending[topic] = merged
        else:
            self.pending[topic] = payload
        self.event.set()

    async def next_batch(self, timeout: float) -> dict[str, dict[str, Any]]:
        """Pending payloads (possibly none after ``timeout``), cleared."""
        if not self.pending:
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), timeout)
            except asyncio.TimeoutError:
                return {}
        batch, self.pending = self.pending, {}
        self.event.clear()
        return batch


class LiveHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscriber] = set()
        self.published = 0

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> Subscriber:
        sub = Subscriber(loop)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Thread-safe; never blocks on a client."""
        with self._lock:
            subs = list(self._subs)
            self.published += 1
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.push, topic, payload)
            except RuntimeError:  # its loop is closed: the server is stopping
                self.unsubscribe(sub)


def sse_event(topic: str, payload: dict[str, Any], seq: int) -> bytes:
    """One Server-Sent Event: ``id``, ``event: update`` and the JSON ``{"topic", "data"}`` on one data line."""
    body = json.dumps({"topic": topic, "data": payload}, separators=(",", ":"), default=str)
    return f"id: {seq}\nevent: update\ndata: {body}\n\n".encode()
