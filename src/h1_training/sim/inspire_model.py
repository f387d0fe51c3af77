"""Emulated Inspire RH56 hand behind a real Modbus TCP server (pymodbus), no rclpy.

The register map is the one the driver uses (``h1_training.drivers.inspire_modbus``, from
TechShare-inc/inspire_demos). Physics is deliberately simple but plausible:

- each finger moves toward ANGLE_SET at a finite speed (``max_speed`` units/s scaled by SPEED_SET/1000);
- with an object in the hand (``contact_angle`` >= 0), a closing finger stops at the contact angle and
  FORCE_ACT rises toward FORCE_SET; STATUS says "force reached" (3);
- STATUS per finger: 0 releasing, 1 grasping, 2 position reached, 3 force reached, 7 fault stop;
- an injected error (ERROR bits, e.g. 1 = stall) freezes that finger (STATUS 7) until CLEAR_ERROR is written;
- writing 0xFFFF (-1) to a setpoint leaves that finger's target unchanged; values above 1000 are clamped;
- TEMP reads a constant plausible temperature, HAND_ID the unit id.

State advances lazily whenever the server is accessed (no timer thread), so an idle emulator costs nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np

from h1_training.drivers import inspire_modbus as reg

BLOCK_START = 1000
BLOCK_END = reg.TEMP + 3  # one past the last register we serve
READ_ONLY = {reg.POS_ACT, reg.ANGLE_ACT, reg.FORCE_ACT, reg.CURRENT, reg.ERROR, reg.STATUS, reg.TEMP}


class InspireHandModel:
    """One hand's registers and finger dynamics; thread-safe (the Modbus loop and ROS callbacks share it)."""

    def __init__(self, unit: int = 1, max_speed: float = 2000.0, contact_angle: int = -1) -> None:
        self.unit = unit
        self.max_speed = float(max_speed)  # units/s at SPEED_SET 1000: full stroke in 0.5 s
        self.contact_angle = int(contact_angle)
        self.lock = threading.Lock()
        n = reg.NUM_DOF
        self.angle = np.full(n, 1000.0)  # start open
        self.angle_set = np.full(n, 1000, dtype=np.int64)
        self.speed_set = np.full(n, 1000, dtype=np.int64)
        self.force_set = np.full(n, 1000, dtype=np.int64)
        self.force = np.zeros(n)
        self.error = np.zeros(n, dtype=np.int64)
        self.status = np.full(n, 2, dtype=np.int64)
        self.temperature = np.full(n, 36, dtype=np.int64)
        self.writes = 0
        self.reads = 0
        self._t = time.monotonic()

    # --- dynamics ---
    def advance(self, now: float | None = None) -> None:
        with self.lock:
            self._advance_locked(time.monotonic() if now is None else now)

    def _advance_locked(self, now: float) -> None:
        dt = max(0.0, min(now - self._t, 0.5))
        self._t = now
        if dt == 0.0:
            return
        target = self.angle_set.astype(np.float64)
        faulted = self.error != 0
        if self.contact_angle >= 0:
            target = np.maximum(target, float(self.contact_angle))  # the object blocks closing
        step = self.max_speed * (self.speed_set / 1000.0) * dt
        delta = np.clip(target - self.angle, -step, step)
        delta[faulted] = 0.0
        self.angle = self.angle + delta
        moving = np.abs(target - self.angle) > 0.5
        blocked = (self.contact_angle >= 0) & (self.angle_set < self.contact_angle) & ~moving
        # force builds up against the object (toward FORCE_SET), decays when free: a first-order lag
        goal = np.where(blocked, self.force_set.astype(np.float64), 0.0)
        self.force += (goal - self.force) * min(1.0, dt / 0.1)
        status = np.where(moving, np.where(delta < 0, 1, 0), 2)
        status = np.where(blocked, 3, status)
        self.status = np.where(faulted, 7, status).astype(np.int64)

    # --- register view ---
    def registers(self, address: int, count: int) -> list[int]:
        """Current values of ``count`` registers from ``address`` (state advanced first)."""
        with self.lock:
            self._advance_locked(time.monotonic())
            self.reads += 1
            return [self._reg_locked(a) for a in range(address, address + count)]

    def _reg_locked(self, a: int) -> int:
        def six(base: int, values: np.ndarray) -> int | None:
            i = a - base
            return int(values[i]) & 0xFFFF if 0 <= i < reg.NUM_DOF else None

        def three(base: int, values: np.ndarray) -> int | None:
            i = a - base
            if 0 <= i < 3:
                return reg.join_bytes([int(values[2 * i]), int(values[2 * i + 1])])[0]
            return None

        for base, values in (
            (reg.ANGLE_SET, self.angle_set),
            (reg.POS_SET, self.angle_set),
            (reg.SPEED_SET, self.speed_set),
            (reg.FORCE_SET, self.force_set),
            (reg.ANGLE_ACT, np.rint(self.angle)),
            (reg.POS_ACT, np.rint(self.angle)),
            (reg.FORCE_ACT, np.rint(self.force)),
            (reg.CURRENT, np.rint(self.force * 0.5)),
        ):
            value = six(base, values)
            if value is not None:
                return value
        for base, values in ((reg.ERROR, self.error), (reg.STATUS, self.status), (reg.TEMP, self.temperature)):
            value = three(base, values)
            if value is not None:
                return value
        if a == reg.HAND_ID:
            return self.unit
        return 0

    def write(self, address: int, values: Sequence[int]) -> list[int] | None:
        """Apply a register write; returns what the registers now hold, or None for a read-only address."""
        end = address + len(values)
        for base in READ_ONLY:
            size = 3 if base in (reg.ERROR, reg.STATUS, reg.TEMP) else reg.NUM_DOF
            if address < base + size and end > base:
                return None
        with self.lock:
            self._advance_locked(time.monotonic())
            self.writes += 1
            for i, v in enumerate(values):
                a = address + i
                v = int(v) & 0xFFFF
                for base, arr in ((reg.ANGLE_SET, self.angle_set), (reg.POS_SET, self.angle_set),
                                  (reg.SPEED_SET, self.speed_set), (reg.FORCE_SET, self.force_set)):
                    j = a - base
                    if 0 <= j < reg.NUM_DOF:
                        if v != reg.KEEP:  # 0xFFFF: leave this finger as it is
                            arr[j] = min(v, 1000)
                        break
                else:
                    if a == reg.CLEAR_ERROR and v:
                        self.error[:] = 0
            return [self._reg_locked(a) for a in range(address, end)]

    # --- fault injection / scene ---
    def inject_error(self, bits: int, fingers: Sequence[int] | None = None) -> None:
        with self.lock:
            idx = list(range(reg.NUM_DOF)) if fingers is None else list(fingers)
            self.error[idx] = int(bits) & 0xFF

    def set_contact_angle(self, angle: int) -> None:
        with self.lock:
            self.contact_angle = int(angle)

    def set_max_speed(self, speed: float) -> None:
        with self.lock:
            self.max_speed = float(speed)


class InspireModbusServer:
    """A pymodbus Modbus server for one hand (or several hands on one RS-485 bus, one unit id each), running its
    asyncio loop in a background thread.

    ``framer="socket"`` is Modbus TCP (the Inspire's Ethernet interface); ``framer="rtu"`` serves RTU frames
    (CRC, unit id) over a TCP socket, which a serial client reaches through pyserial's ``socket://host:port``
    URL: the RS-485 framing without the cable.
    """

    def __init__(self, model: InspireHandModel | list[InspireHandModel], host: str = "127.0.0.1",
                 port: int = 6000, framer: str = "socket") -> None:
        self.models = list(model) if isinstance(model, list) else [model]
        if len({m.unit for m in self.models}) != len(self.models):
            raise ValueError("hands on one bus need distinct unit ids")
        if framer not in ("socket", "rtu"):
            raise ValueError(f"framer must be 'socket' or 'rtu', got {framer!r}")
        self.model = self.models[0]
        self.host, self.port, self.framer = host, port, framer
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"modbus-{port}", daemon=True)

    @staticmethod
    async def _action(model, func_code, start_address, address, count, registers, set_values):
        """pymodbus SimDevice hook: serve reads from the model, route writes into it."""
        from pymodbus.constants import ExcCodes

        off = address - start_address
        if set_values is None:
            registers[off:off + count] = model.registers(address, count)
            return None
        values = [int(v) for v in (set_values if isinstance(set_values, list) else [set_values])]
        held = model.write(address, values)
        if held is None:
            return ExcCodes.ILLEGAL_ADDRESS
        set_values[:] = held  # what is stored is what the hand accepted (clamped, 0xFFFF resolved)
        return None

    def _run(self) -> None:
        import functools

        from pymodbus import FramerType
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        asyncio.set_event_loop(self._loop)
        devices = [
            SimDevice(
                model.unit,
                simdata=[SimData(BLOCK_START, count=BLOCK_END - BLOCK_START, values=0, datatype=DataType.REGISTERS)],
                action=functools.partial(self._action, model),
            )
            for model in self.models
        ]
        framer = FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET

        async def serve() -> None:
            self._server = ModbusTcpServer(devices, address=(self.host, self.port), framer=framer)
            await self._server.serve_forever(background=True)  # raises when the port cannot be bound
            self._ready.set()
            await self._server.serving  # resolved by shutdown()

        try:
            self._loop.run_until_complete(serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"Modbus server on {self.host}:{self.port} did not start in {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"Modbus server on {self.host}:{self.port} failed: {self._error}") from self._error

    def stop(self) -> None:
        if self._server is not None and self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                fut.result(timeout=3.0)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        self._thread.join(timeout=3.0)
