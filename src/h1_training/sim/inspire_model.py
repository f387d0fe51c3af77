"""Emulated Inspire RH56 hand behind a real Modbus server (pymodbus; TCP, or RTU framing over TCP), no rclpy.

The register map is the one the driver uses (``h1_training.drivers.inspire_registers``, from
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
import functools
import threading
import time
from collections.abc import Sequence

import numpy as np

from h1_training.drivers import inspire_registers as reg

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
        # plain floats per finger: six fingers are cheaper in Python than ~25 numpy calls (every Modbus read
        # advances the model)
        contact = self.contact_angle
        lag = min(1.0, dt / 0.1)
        angle, force = self.angle.tolist(), self.force.tolist()
        status = [0] * reg.NUM_DOF
        for i, (angle_set, speed_set, force_set, error) in enumerate(zip(
                self.angle_set.tolist(), self.speed_set.tolist(), self.force_set.tolist(), self.error.tolist())):
            target = float(angle_set) if contact < 0 else max(float(angle_set), float(contact))  # object blocks
            step = self.max_speed * (speed_set / 1000.0) * dt
            delta = 0.0 if error else min(max(target - angle[i], -step), step)
            angle[i] += delta
            moving = abs(target - angle[i]) > 0.5
            blocked = contact >= 0 and angle_set < contact and not moving
            # force builds up against the object (toward FORCE_SET), decays when free: a first-order lag
            force[i] += ((float(force_set) if blocked else 0.0) - force[i]) * lag
            status[i] = 7 if error else 3 if blocked else (1 if delta < 0 else 0) if moving else 2
        self.angle = np.array(angle)
        self.force = np.array(force)
        self.status = np.array(status, dtype=np.int64)

    # --- register view ---
    def registers(self, address: int, count: int) -> list[int]:
        """Current values of ``count`` registers from ``address`` (state advanced first)."""
        with self.lock:
            self._advance_locked(time.monotonic())
            self.reads += 1
            return self._regs_locked(address, count)

    def _regs_locked(self, address: int, count: int) -> list[int]:
        out = [0] * count
        end = address + count
        for base, size, values in _BLOCKS:
            if address < base + size and end > base:  # only the blocks this request touches
                regs = values(self)
                for a in range(max(address, base), min(end, base + size)):
                    out[a - address] = regs[a - base]
        return out

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
            return self._regs_locked(address, len(values))

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


def _words(values: np.ndarray) -> list[int]:
    return [int(v) & 0xFFFF for v in np.rint(values).tolist()]


def _byte_pairs(values: np.ndarray) -> list[int]:
    return reg.join_bytes(values.tolist())


# (first register, count, register values of a model): the register map the emulator serves
_BLOCKS = (
    (reg.HAND_ID, 1, lambda m: [m.unit]),
    (reg.POS_SET, reg.NUM_DOF, lambda m: _words(m.angle_set)),
    (reg.ANGLE_SET, reg.NUM_DOF, lambda m: _words(m.angle_set)),
    (reg.FORCE_SET, reg.NUM_DOF, lambda m: _words(m.force_set)),
    (reg.SPEED_SET, reg.NUM_DOF, lambda m: _words(m.speed_set)),
    (reg.POS_ACT, reg.NUM_DOF, lambda m: _words(m.angle)),
    (reg.ANGLE_ACT, reg.NUM_DOF, lambda m: _words(m.angle)),
    (reg.FORCE_ACT, reg.NUM_DOF, lambda m: _words(m.force)),
    (reg.CURRENT, reg.NUM_DOF, lambda m: _words(m.force * 0.5)),
    (reg.ERROR, 3, lambda m: _byte_pairs(m.error)),
    (reg.STATUS, 3, lambda m: _byte_pairs(m.status)),
    (reg.TEMP, 3, lambda m: _byte_pairs(m.temperature)),
)


@functools.cache
def _server_class() -> type:
    """pymodbus' ModbusTcpServer, its request handler scheduling each request as a plain task on its loop.

    pymodbus hops from the loop to the loop through ``run_coroutine_threadsafe``: a self-pipe write, an extra
    epoll wake-up and a concurrent future per request, about a third of the server's CPU at the driver's poll
    rate. Imported lazily: pymodbus.server pulls in aiohttp (~0.25 s).
    """
    from pymodbus.server import ModbusTcpServer
    from pymodbus.server.requesthandler import ServerRequestHandler

    class RequestHandler(ServerRequestHandler):
        def handle_later(self) -> None:
            # called in the loop's own thread; the reference keeps the task alive (one request at a time)
            self.task = self.loop.create_task(self.handle_request())

    class HandServer(ModbusTcpServer):
        def callback_new_connection(self) -> ServerRequestHandler:
            return RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)

    return HandServer


class InspireModbusServer:
    """A pymodbus Modbus server for one hand (or several hands on one RS-485 bus, one unit id each), running its
    asyncio loop in a background thread.

    ``framer="socket"`` is Modbus TCP (the Inspire's Ethernet interface); ``framer="rtu"`` serves RTU frames
    (CRC, unit id) over a TCP socket, which a serial client reaches through pyserial's ``socket://host:port``
    URL: the RS-485 framing without the cable. pymodbus answers an address outside the map with exception 0x02
    and a unit id it does not have with 0x04 (a real RS-485 bus would stay silent).
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
    async def _action(model: InspireHandModel, func_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | None):
        """pymodbus SimDevice hook: reads come from the model (only the blocks they touch), writes go into it."""
        from pymodbus.constants import ExcCodes

        if set_values is None:
            off = address - start_address
            registers[off:off + count] = model.registers(address, count)
            return None
        held = model.write(address, set_values)
        if held is None:
            return ExcCodes.ILLEGAL_ADDRESS
        set_values[:] = held  # what is stored is what the hand accepted (clamped, 0xFFFF resolved)
        return None

    def _run(self) -> None:
        from pymodbus import FramerType
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
            self._server = _server_class()(devices, address=(self.host, self.port), framer=framer)
            await self._server.serve_forever(background=True)  # raises when the port cannot be bound
            self._ready.set()
            await self._server.serving  # resolved by shutdown()

        try:
            self._loop.run_until_complete(serve())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 30.0) -> None:
        # the thread imports pymodbus and binds: on a loaded 2-core machine (the soak) that took over 5 s; a
        # port that is taken still fails at once (self._error)
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
