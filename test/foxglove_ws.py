"""A minimal Foxglove WebSocket client (subprotocol ``foxglove.sdk.v1``) for tests, written from the protocol
(foxglove/ws-protocol ``docs/spec.md``), with the plain ``websockets`` package and no project code: what Studio
sends and receives, nothing more.

Binary server opcodes: 0x01 messageData (u32 subscription id, u64 log time, payload), 0x02 time (u64),
0x03 serviceCallResponse (u32 service id, u32 call id, u32 encoding length, encoding, payload).
Binary client opcode: 0x02 serviceCallRequest (same layout as the response). All integers little-endian.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import threading
import time
from collections import defaultdict
from typing import Any

from websockets.sync.client import connect

SUBPROTOCOL = "foxglove.sdk.v1"


class FoxgloveClient:
    def __init__(self, url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, subprotocols=[SUBPROTOCOL], max_size=None, open_timeout=10))
        self.server_info: dict[str, Any] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.messages: dict[int, list[tuple[int, bytes]]] = defaultdict(list)  # subscription id -> (time, data)
        self.statuses: list[dict[str, Any]] = []
        self.parameter_values: list[dict[str, Any]] = []
        self.times: list[int] = []
        self._responses: dict[int, tuple[str, Any]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        self._stack.close()
        self._reader.join(timeout=5)

    def _read(self) -> None:
        try:
            for frame in self.ws:
                with self._cond:
                    if isinstance(frame, str):
                        self._on_text(json.loads(frame))
                    else:
                        self._on_binary(frame)
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - connection closed
            pass

    def _on_text(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "serverInfo":
            self.server_info = msg
        elif op == "advertise":
            for ch in msg["channels"]:
                self.channels[ch["id"]] = ch
        elif op == "unadvertise":
            for cid in msg["channelIds"]:
                self.channels.pop(cid, None)
        elif op == "advertiseServices":
            for svc in msg["services"]:
                self.services[svc["name"]] = svc
        elif op == "unadvertiseServices":
            gone = set(msg["serviceIds"])
            self.services = {n: s for n, s in self.services.items() if s["id"] not in gone}
        elif op == "status":
            self.statuses.append(msg)
        elif op == "parameterValues":
            self.parameter_values.append(msg)
        elif op == "serviceCallFailure":
            self._responses[msg["callId"]] = ("error", msg["message"])

    def _on_binary(self, data: bytes) -> None:
        op = data[0]
        if op == 0x01:
            sub_id, stamp = struct.unpack_from("<IQ", data, 1)
            self.messages[sub_id].append((stamp, bytes(data[13:])))
        elif op == 0x02:
            self.times.append(struct.unpack_from("<Q", data, 1)[0])
        elif op == 0x03:
            _service_id, call_id, enc_len = struct.unpack_from("<III", data, 1)
            self._responses[call_id] = ("ok", bytes(data[13 + enc_len:]))

    def wait(self, predicate, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what} within {timeout:g} s")
                self._cond.wait(left)

    def channel(self, topic: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait(lambda: next((c for c in self.channels.values() if c["topic"] == topic), None), timeout,
                         f"no channel {topic} advertised")

    def service(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait(lambda: self.services.get(name), timeout, f"no service {name} advertised")

    def subscribe(self, channel_id: int) -> int:
        sub_id = next(self._ids)
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": sub_id, "channelId": channel_id}]}))
        return sub_id

    def unsubscribe(self, sub_id: int) -> None:
        self.ws.send(json.dumps({"op": "unsubscribe", "subscriptionIds": [sub_id]}))

    def call_service(self, name: str, request: dict[str, Any], timeout: float = 30.0) -> tuple[str, Any]:
        svc = self.service(name)
        call_id = next(self._ids)
        encoding = b"json"
        payload = json.dumps(request).encode()
        self.ws.send(struct.pack("<BIII", 0x02, svc["id"], call_id, len(encoding)) + encoding + payload)
        kind, body = self.wait(lambda: self._responses.get(call_id), timeout, f"no reply from {name}")
        return (kind, json.loads(body)) if kind == "ok" else (kind, body)

    def get_parameters(self, names: list[str], timeout: float = 30.0) -> dict[str, Any]:
        req_id = f"get-{next(self._ids)}"
        self.ws.send(json.dumps({"op": "getParameters", "parameterNames": names, "id": req_id}))
        reply = self.wait(lambda: next((p for p in self.parameter_values if p.get("id") == req_id), None), timeout,
                          "no parameterValues")
        return {p["name"]: p.get("value") for p in reply["parameters"]}

    def set_parameters(self, values: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        req_id = f"set-{next(self._ids)}"
        params = [{"name": n, "value": v, **({"type": "float64"} if isinstance(v, float) else {})}
                  for n, v in values.items()]
        self.ws.send(json.dumps({"op": "setParameters", "parameters": params, "id": req_id}))
        reply = self.wait(lambda: next((p for p in self.parameter_values if p.get("id") == req_id), None), timeout,
                          "no parameterValues after setParameters")
        return {p["name"]: p.get("value") for p in reply["parameters"]}
