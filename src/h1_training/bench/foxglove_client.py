"""A foxglove.sdk.v1 WebSocket client for benches that load the gateway (bench foxglove, bench recorder
--full-stack): subscribes to every advertised channel and counts what arrives."""

from __future__ import annotations

import json
import threading
from collections import Counter


class FoxgloveCountingClient:
    """A foxglove.sdk.v1 client that subscribes to every channel and counts what arrives (messageData, 0x01)."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._ws_cm = connect(url, subprotocols=["foxglove.sdk.v1"], max_size=None, open_timeout=10)
        self.ws = self._ws_cm.__enter__()
        self.topics: dict[int, str] = {}
        self.messages: Counter[str] = Counter()
        self.bytes = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        next_id = 1
        try:
            for frame in self.ws:
                if isinstance(frame, str):
                    msg = json.loads(frame)
                    if msg.get("op") == "advertise":
                        subs = []
                        for ch in msg["channels"]:
                            self.topics[next_id] = ch["topic"]
                            subs.append({"id": next_id, "channelId": ch["id"]})
                            next_id += 1
                        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))
                elif frame[0] == 0x01:
                    sub = int.from_bytes(frame[1:5], "little")
                    self.messages[self.topics.get(sub, "?")] += 1
                    self.bytes += len(frame)
        except Exception:  # noqa: BLE001 - closed
            pass

    def close(self) -> None:
        self._ws_cm.__exit__(None, None, None)
        self._thread.join(timeout=5)
