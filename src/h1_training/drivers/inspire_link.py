"""One Modbus link to Inspire hands (pymodbus, TCP or RTU; no rclpy): where a hand is, the timeout-bounded
client with its lock, and the links of several hands (hands on one RS-485 bus share one)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from h1_training.drivers.inspire_registers import DEFAULT_BAUDRATE, DEFAULT_TCP_PORT


@dataclass(frozen=True)
class HandEndpoint:
    """Where one hand is: Modbus TCP host/port/unit, or RTU serial port/baud/unit."""

    name: str  # "left" / "right"
    transport: str = "tcp"
    host: str = "127.0.0.1"
    port: int = DEFAULT_TCP_PORT
    serial_port: str = ""
    baudrate: int = DEFAULT_BAUDRATE
    unit: int = 1

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "rtu"):
            raise ValueError(f"{self.name} hand: transport must be 'tcp' or 'rtu', got {self.transport!r}")
        if self.transport == "tcp" and not (self.host and 0 < self.port < 65536):
            raise ValueError(f"{self.name} hand: Modbus TCP needs a host and a port 1..65535")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError(f"{self.name} hand: Modbus RTU needs a serial port (e.g. /dev/ttyUSB0)")
        if not 0 <= self.unit <= 247:
            raise ValueError(f"{self.name} hand: unit id must be 0..247, got {self.unit}")

    def describe(self) -> str:
        if self.transport == "tcp":
            return f"tcp {self.host}:{self.port} unit {self.unit}"
        return f"rtu {self.serial_port}@{self.baudrate} unit {self.unit}"


# --- one Modbus link ---------------------------------------------------------------------------------------
class HandLinkError(RuntimeError):
    """The hand did not answer (timeout, connection refused/reset, Modbus exception response)."""


class ModbusLink:
    """One pymodbus sync client plus a lock; TCP hands get one each, hands on one RTU bus share one."""

    def __init__(self, endpoint: HandEndpoint, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.client = None
        self.shared = False

    def open(self) -> None:
        from pymodbus.client import ModbusSerialClient, ModbusTcpClient

        with self.lock:
            if self.client is not None and self.client.connected:
                return
            self._close_locked()
            ep = self.endpoint
            if ep.transport == "tcp":
                client = ModbusTcpClient(ep.host, port=ep.port, timeout=self.timeout_s, retries=0)
            else:
                client = ModbusSerialClient(ep.serial_port, baudrate=ep.baudrate, timeout=self.timeout_s, retries=0)
            try:
                ok = client.connect()
            except Exception as exc:  # noqa: BLE001 - serial/socket errors of any kind mean "not reachable"
                client.close()
                raise HandLinkError(f"cannot open {ep.describe()}: {exc}") from exc
            if not ok:
                client.close()
                raise HandLinkError(f"cannot connect to {ep.describe()}")
            self.client = client

    def _close_locked(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may raise; it is gone either way
                pass
        self.client = None

    def close(self) -> None:
        with self.lock:
            self._close_locked()

    @property
    def is_open(self) -> bool:
        client = self.client
        return client is not None and bool(client.connected)

    def read(self, address: int, count: int, unit: int) -> list[int]:
        with self.lock:
            client = self.client
            if client is None:
                raise HandLinkError("link not open")
            try:
                reply = client.read_holding_registers(address, count=count, device_id=unit)
            except Exception as exc:  # noqa: BLE001 - pymodbus raises ModbusIOException/ConnectionException/...
                raise HandLinkError(f"read {address}x{count} failed: {exc}") from exc
        if reply.isError() or len(getattr(reply, "registers", [])) < count:
            raise HandLinkError(f"read {address}x{count}: error reply {reply}")
        return list(reply.registers[:count])

    def write(self, address: int, values: Sequence[int], unit: int) -> None:
        with self.lock:
            client = self.client
            if client is None:
                raise HandLinkError("link not open")
            try:
                reply = client.write_registers(address, [int(v) & 0xFFFF for v in values], device_id=unit)
            except Exception as exc:  # noqa: BLE001
                raise HandLinkError(f"write {address} failed: {exc}") from exc
        if reply.isError():
            raise HandLinkError(f"write {address}: error reply {reply}")


def make_links(endpoints: Sequence[HandEndpoint], timeout_s: float) -> dict[str, ModbusLink]:
    """One link per TCP hand; hands on the same serial port share one link (one RS-485 bus)."""
    links: dict[str, ModbusLink] = {}
    by_port: dict[str, ModbusLink] = {}
    for ep in endpoints:
        if ep.transport == "rtu":
            link = by_port.get(ep.serial_port)
            if link is None:
                link = by_port[ep.serial_port] = ModbusLink(ep, timeout_s)
            else:
                link.shared = True
                if link.endpoint.baudrate != ep.baudrate:
                    raise ValueError(f"hands on {ep.serial_port} must use one baud rate")
            links[ep.name] = link
        else:
            links[ep.name] = ModbusLink(ep, timeout_s)
    return links
