"""Emulated Inspire RH56 hand behind a real Modbus server (TCP, or RTU framing over TCP), no rclpy.

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

import selectors
import socket
import struct
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


# Modbus function codes and exception codes the emulator speaks (Modbus Application Protocol v1.1b3).
READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE = 0x03, 0x06, 0x10
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE = 0x01, 0x02, 0x03, 0x04


def crc16_modbus(data: bytes) -> int:
    """Modbus RTU CRC (reflected poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC16_TABLE[(crc ^ b) & 0xFF]
    return crc


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC16_TABLE = _crc16_table()


def serve_pdu(model: InspireHandModel, pdu: bytes) -> bytes:
    """One request PDU (function code + data) -> the response PDU, exceptions included."""
    fc = pdu[0]
    if fc == READ_HOLDING and len(pdu) == 5:
        address, count = struct.unpack_from(">HH", pdu, 1)
        if not 1 <= count <= 125:
            return bytes((fc | 0x80, ILLEGAL_VALUE))
        if address < BLOCK_START or address + count > BLOCK_END:
            return bytes((fc | 0x80, ILLEGAL_ADDRESS))
        return struct.pack(f">BB{count}H", fc, 2 * count, *model.registers(address, count))
    if fc == WRITE_SINGLE and len(pdu) == 5:
        address, value = struct.unpack_from(">HH", pdu, 1)
        if address < BLOCK_START or address >= BLOCK_END or model.write(address, [value]) is None:
            return bytes((fc | 0x80, ILLEGAL_ADDRESS))
        return bytes(pdu)  # the response echoes the request
    if fc == WRITE_MULTIPLE and len(pdu) >= 6:
        address, count, nbytes = struct.unpack_from(">HHB", pdu, 1)
        if not 1 <= count <= 123 or nbytes != 2 * count or len(pdu) != 6 + nbytes:
            return bytes((fc | 0x80, ILLEGAL_VALUE))
        values = struct.unpack_from(f">{count}H", pdu, 6)
        if address < BLOCK_START or address + count > BLOCK_END or model.write(address, values) is None:
            return bytes((fc | 0x80, ILLEGAL_ADDRESS))
        return struct.pack(">BHH", fc, address, count)
    if fc in (READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE):
        return bytes((fc | 0x80, ILLEGAL_VALUE))  # malformed request data
    return bytes((fc | 0x80, ILLEGAL_FUNCTION))


class _Connection:
    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, bytearray()


class InspireModbusServer:
    """A Modbus server for one hand (or several hands on one RS-485 bus, one unit id each), in a background
    thread: function codes 03 (read holding registers), 06 and 16 (write registers), exception responses as
    the Modbus spec defines them.

    ``framer="socket"`` is Modbus TCP (MBAP header; the Inspire's Ethernet interface); ``framer="rtu"`` serves
    RTU frames (unit id, PDU, CRC-16) over a TCP socket, which a serial client reaches through pyserial's
    ``socket://host:port`` URL: the RS-485 framing without the cable. A unit id the server does not have gets
    exception 0x04, as from the pymodbus server this replaced (a real RS-485 bus would stay silent).

    Written for the emulator instead of pymodbus' server: ~0.4 ms of asyncio/pymodbus per request was most of
    the sim's CPU at the driver's 2 x 120 requests/s; this one frames, serves and answers in one pass.
    """

    def __init__(self, model: InspireHandModel | list[InspireHandModel], host: str = "127.0.0.1",
                 port: int = 6000, framer: str = "socket") -> None:
        self.models = list(model) if isinstance(model, list) else [model]
        if len({m.unit for m in self.models}) != len(self.models):
            raise ValueError("hands on one bus need distinct unit ids")
        if framer not in ("socket", "rtu"):
            raise ValueError(f"framer must be 'socket' or 'rtu', got {framer!r}")
        self.model = self.models[0]
        self._units = {m.unit: m for m in self.models}
        self.host, self.port, self.framer = host, port, framer
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"modbus-{port}", daemon=True)

    def start(self, timeout: float = 5.0) -> None:  # noqa: ARG002 - binding is immediate; kept for callers
        try:
            listener = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as exc:
            raise RuntimeError(f"Modbus server on {self.host}:{self.port} failed: {exc}") from exc
        listener.setblocking(False)
        self._listener = listener
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=3.0)

    # --- the server thread ---
    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        conns: dict[socket.socket, _Connection] = {}
        try:
            while not self._stop.is_set():
                for key, _ in sel.select():
                    sock = key.fileobj
                    if sock is self._listener:
                        self._accept(sel, conns)
                    elif sock in conns:
                        self._receive(sel, conns, conns[sock])
        finally:
            for conn in conns.values():
                conn.sock.close()
            sel.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self, sel: selectors.BaseSelector, conns: dict) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(True)  # answers are a few bytes: a blocking sendall never waits in practice
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns[sock] = _Connection(sock)
        sel.register(sock, selectors.EVENT_READ)

    def _close(self, sel: selectors.BaseSelector, conns: dict, conn: _Connection) -> None:
        sel.unregister(conn.sock)
        del conns[conn.sock]
        conn.sock.close()

    def _receive(self, sel: selectors.BaseSelector, conns: dict, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._close(sel, conns, conn)
            return
        conn.buf += data
        try:
            out = self._frames_tcp(conn.buf) if self.framer == "socket" else self._frames_rtu(conn.buf)
            if out:
                conn.sock.sendall(out)
        except (OSError, ValueError):  # a reset peer, or bytes that are not Modbus: drop the connection
            self._close(sel, conns, conn)

    def _frames_tcp(self, buf: bytearray) -> bytes:
        """Answer every complete MBAP frame in ``buf`` (consumed); a partial frame waits for more bytes."""
        out = b""
        while len(buf) >= 8:
            tid, proto, length, unit = struct.unpack_from(">HHHB", buf)
            if proto != 0 or not 2 <= length <= 254:
                raise ValueError("not a Modbus TCP frame")
            if len(buf) < 6 + length:
                break
            pdu = bytes(buf[7:6 + length])
            del buf[:6 + length]
            model = self._units.get(unit)
            reply = serve_pdu(model, pdu) if model is not None else bytes((pdu[0] | 0x80, DEVICE_FAILURE))
            out += struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply
        return out

    def _frames_rtu(self, buf: bytearray) -> bytes:
        """Answer every complete RTU request in ``buf``: framed by its function code, checked by its CRC."""
        out = b""
        while len(buf) >= 4:
            fc = buf[1]
            if fc in (READ_HOLDING, WRITE_SINGLE):
                size = 8
            elif fc == WRITE_MULTIPLE:
                if len(buf) < 7:
                    break
                size = 9 + buf[6]
            else:  # a function we cannot frame: resynchronise on the next read
                buf.clear()
                break
            if len(buf) < size:
                break
            frame = bytes(buf[:size])
            del buf[:size]
            if crc16_modbus(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                continue  # corrupted on the "bus": a real slave stays silent
            model = self._units.get(frame[0])
            pdu = frame[1:-2]
            reply = bytes((frame[0],)) + (serve_pdu(model, pdu) if model is not None
                                          else bytes((pdu[0] | 0x80, DEVICE_FAILURE)))
            out += reply + crc16_modbus(reply).to_bytes(2, "little")
        return out
