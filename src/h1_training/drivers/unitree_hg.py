"""The unitree ``unitree_hg`` wire (H1-2 / G1 ``rt/lowcmd``, ``rt/lowstate``) over unitree_sdk2py: SDK import,
DDS start-up, CRC, and a fast packer for the messages we write at 250-500 Hz. No rclpy.

Works with both Python SDKs (same module layout and API):
- ``unitree-sdk2py-dimos`` (PyPI, cyclonedds 11 wheel);
- upstream ``unitree_sdk2_python`` (cyclonedds 0.10.2 built against the C library).

Facts used (cited):
- IDL ``unitree_sdk2py.idl.unitree_hg.msg.dds_`` LowCmd_/LowState_, 35 motor slots.
- CRC: unitree_sdk2py ``utils/crc.py``: CRC-32 (poly 0x04C11DB7, init 0xFFFFFFFF, MSB first, no final xor) over
  the little-endian 32-bit words of the message in its C struct layout, excluding the trailing crc word.
  The C layouts below are the ones that file packs (``'<2B2x' + 'B3x5fI'*35 + '5I'`` for LowCmd_,
  ``'<2I2B2xI' + '13fh2x' + 'B3x4f2hf7I'*35 + '40B5I'`` for LowState_).
- Cyclone's SDK config (``core/channel_config.py``) traces to ``/tmp/cdds.LOG`` when an interface is named:
  ``init_dds`` points that file into a private per-user folder instead.

Why not plain SDK objects on the hot path: cyclonedds' pure-Python (de)serializer costs 0.4-0.6 ms per
LowCmd_/LowState_ here (plus ~0.15-0.27 ms for the SDK's CRC); at 250-500 Hz on a 2-core machine that alone
was ~35 % of a core per stream (measured). Both messages are fixed-size, so we keep them as numpy records in
their C layout (what the CRC covers) and convert to/from XCDR1 by moving 2 pad bytes:
- ``FastWriter`` fills a record, computes the CRC, hands the XCDR bytes to the SDK's ChannelPublisher;
- ``RecordSubscriber`` reads with the SDK's ChannelSubscriber through a stand-in type that shares the SDK type's
  IDL description (same wire type) but returns the raw bytes instead of 35 dataclasses.
Both check themselves against cyclonedds' own serializer and the SDK's CRC at start-up and fall back to the
plain SDK path if anything differs (another cyclonedds version), so the wire stays the SDK's.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:  # defensive: either SDK flavour, or a clear error when neither is installed
    from unitree_sdk2py.core import channel as _sdk_channel
    from unitree_sdk2py.core.channel import ChannelFactoryInitialize, ChannelPublisher, ChannelSubscriber
    from unitree_sdk2py.idl.unitree_hg.msg.dds_ import IMUState_, LowCmd_, LowState_, MotorCmd_, MotorState_
    from unitree_sdk2py.utils.crc import CRC

    SDK_ERROR: Exception | None = None
except Exception as exc:  # noqa: BLE001 - ImportError, or cyclonedds failing to load its C library
    SDK_ERROR = exc

NUM_SLOTS = 35
LOWCMD_TOPIC = "rt/lowcmd"
LOWSTATE_TOPIC = "rt/lowstate"


def require_sdk() -> None:
    if SDK_ERROR is not None:
        raise RuntimeError(
            f"unitree_sdk2py is not usable ({SDK_ERROR}). Install `unitree-sdk2py-dimos` (pip, brings cyclonedds "
            "11) or upstream unitree_sdk2_python with cyclonedds 0.10.2 built against the Cyclone C library."
        )


# --- DDS start-up ----------------------------------------------------------------------------------------
_dds_lock = threading.Lock()
_dds_started: tuple[int, str] | None = None


def resolve_domain(domain: int) -> int:
    """A negative domain means "the same as ROS_DOMAIN_ID" (simulation: keeps parallel sim stacks apart)."""
    if domain >= 0:
        return domain
    try:
        return int(os.environ.get("ROS_DOMAIN_ID", "0"))
    except ValueError:
        return 0


def private_log_path(label: str) -> Path:
    """A per-user, per-process trace file for Cyclone (instead of a shared /tmp/cdds.LOG)."""
    folder = Path(tempfile.gettempdir()) / f"h1_training-{os.getuid()}" / "cyclonedds"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in folder.glob("cdds-*.LOG"):  # files of processes that were killed before their atexit ran
        pid = old.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_quietly(old)
    return folder / f"cdds-{label}-{os.getpid()}.LOG"


def _with_trace_file(config: str, path: Path) -> str:
    if "<OutputFile>" in config:
        return re.sub(r"<OutputFile>.*?</OutputFile>", f"<OutputFile>{path}</OutputFile>", config, flags=re.S)
    block = f"<Tracing><OutputFile>{path}</OutputFile></Tracing>"
    if "</Domain>" in config:
        return config.replace("</Domain>", block + "</Domain>", 1)
    return config


def init_dds(domain: int, interface: str, label: str = "h1") -> Path | None:
    """``ChannelFactoryInitialize(domain, interface)`` once per process, with Cyclone's trace file made private.

    Returns the trace file path (or None when the SDK's config has no tracing). A second call with the same
    arguments is a no-op; with different ones it raises (the SDK's factory is a process-wide singleton).
    """
    global _dds_started
    require_sdk()
    domain = resolve_domain(domain)
    with _dds_lock:
        if _dds_started is not None:
            if _dds_started != (domain, interface):
                raise RuntimeError(f"unitree DDS already started on domain {_dds_started[0]} interface "
                                   f"{_dds_started[1]!r}; cannot switch to {domain}/{interface!r} in one process")
            return None
        log_path = None
        template = getattr(_sdk_channel, "ChannelConfigHasInterface", None)
        if interface and isinstance(template, str):
            log_path = private_log_path(label)
            _sdk_channel.ChannelConfigHasInterface = _with_trace_file(template, log_path)
            atexit.register(_remove_quietly, log_path)
        ChannelFactoryInitialize(domain, interface or None)
        _dds_started = (domain, interface)
        return log_path


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# --- messages ---------------------------------------------------------------------------------------------
def new_lowcmd() -> Any:
    require_sdk()
    return LowCmd_(mode_pr=0, mode_machine=0,
                   motor_cmd=[MotorCmd_(mode=0, q=0.0, dq=0.0, tau=0.0, kp=0.0, kd=0.0, reserve=0)
                              for _ in range(NUM_SLOTS)],
                   reserve=[0, 0, 0, 0], crc=0)


def new_lowstate() -> Any:
    require_sdk()
    return LowState_(
        version=[0, 0], mode_pr=0, mode_machine=0, tick=0,
        imu_state=IMUState_(quaternion=[1.0, 0.0, 0.0, 0.0], gyroscope=[0.0] * 3, accelerometer=[0.0] * 3,
                            rpy=[0.0] * 3, temperature=0),
        motor_state=[MotorState_(mode=0, q=0.0, dq=0.0, ddq=0.0, tau_est=0.0, temperature=[0, 0], vol=0.0,
                                 sensor=[0, 0], motorstate=0, reserve=[0, 0, 0, 0]) for _ in range(NUM_SLOTS)],
        wireless_remote=[0] * 40, reserve=[0, 0, 0, 0], crc=0)


# C struct layouts (what the CRC covers); see the module docstring for the source.
_MOTOR_CMD_C = np.dtype([("mode", "u1"), ("_pad", "V3"), ("q", "<f4"), ("dq", "<f4"), ("tau", "<f4"),
                         ("kp", "<f4"), ("kd", "<f4"), ("reserve", "<u4")])
LOWCMD_C = np.dtype([("mode_pr", "u1"), ("mode_machine", "u1"), ("_pad", "V2"),
                     ("motor_cmd", _MOTOR_CMD_C, (NUM_SLOTS,)), ("reserve", "<u4", (4,)), ("crc", "<u4")])
_IMU_C = np.dtype([("quaternion", "<f4", (4,)), ("gyroscope", "<f4", (3,)), ("accelerometer", "<f4", (3,)),
                   ("rpy", "<f4", (3,)), ("temperature", "<i2"), ("_pad", "V2")])
_MOTOR_STATE_C = np.dtype([("mode", "u1"), ("_pad", "V3"), ("q", "<f4"), ("dq", "<f4"), ("ddq", "<f4"),
                           ("tau_est", "<f4"), ("temperature", "<i2", (2,)), ("vol", "<f4"),
                           ("sensor", "<u4", (2,)), ("motorstate", "<u4"), ("reserve", "<u4", (4,))])
LOWSTATE_C = np.dtype([("version", "<u4", (2,)), ("mode_pr", "u1"), ("mode_machine", "u1"), ("_pad", "V2"),
                       ("tick", "<u4"), ("imu_state", _IMU_C), ("motor_state", _MOTOR_STATE_C, (NUM_SLOTS,)),
                       ("wireless_remote", "u1", (40,)), ("reserve", "<u4", (4,)), ("crc", "<u4")])
assert LOWCMD_C.itemsize == 1004 and LOWSTATE_C.itemsize == 2092

# Where the C layout and XCDR1 differ: XCDR aligns the first motor's uint8 ``mode`` right after the preceding
# field (LowCmd_: payload offset 2, LowState_: 70), the C struct pads it to a 4-byte boundary (4, 72). From that
# motor's first float on, both are identical.
_XCDR1_LE_HEADER = b"\x00\x01\x00\x00"


# Every byte with its bits in reverse order: the unitree CRC runs MSB first, zlib's CRC-32 LSB first.
_BITREV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def crc32_words(words: np.ndarray) -> int:
    """The unitree CRC over little-endian uint32 words (bitwise equal to ``CRC().Crc``).

    Computed by zlib: an MSB-first CRC is the bit-reversed LSB-first (reflected) CRC of the bit-reversed
    input with the same polynomial and initial value, and zlib's final xor is undone. Bit-reversing each word
    = byteswap + bit-reversing each byte. ~4 us for a LowState_ against ~30 us for the SDK's compiled loop.
    """
    data = np.ascontiguousarray(words, dtype="<u4").byteswap().tobytes().translate(_BITREV8)
    crc = zlib.crc32(data) ^ 0xFFFFFFFF
    return int.from_bytes(crc.to_bytes(4, "little").translate(_BITREV8), "big")


def crc_of_c_bytes(data: bytes) -> int:
    """CRC of a message in its C layout (all words but the trailing crc)."""
    return crc32_words(np.frombuffer(data, dtype="<u4")[:-1])


def crc_of_c_buffer(buf: np.ndarray) -> int:
    """CRC of a LOWCMD_C / LOWSTATE_C record (a contiguous 1-element array)."""
    return crc32_words(buf.view("<u4")[:-1])


# The same C layouts as struct formats: packing a received message from its Python fields is faster this way.
_LOWCMD_STRUCT = struct.Struct("<2B2x" + "B3x5fI" * NUM_SLOTS + "5I")
_LOWSTATE_STRUCT = struct.Struct("<2I2B2xI" + "13fh2x" + "B3x4f2hf7I" * NUM_SLOTS + "40B5I")


def _lowcmd_c_bytes(msg: Any) -> bytes:
    values = [msg.mode_pr, msg.mode_machine]
    for c in msg.motor_cmd:
        values += (c.mode, c.q, c.dq, c.tau, c.kp, c.kd, c.reserve)
    values += [*msg.reserve, msg.crc]
    return _LOWCMD_STRUCT.pack(*values)


def lowcmd_to_c(msg: Any) -> np.ndarray:
    return np.frombuffer(_lowcmd_c_bytes(msg), dtype=LOWCMD_C).copy()


def lowcmd_crc(msg: Any) -> int:
    return crc_of_c_bytes(_lowcmd_c_bytes(msg))


def _lowstate_c_bytes(msg: Any) -> bytes:
    imu = msg.imu_state
    values = [*msg.version, msg.mode_pr, msg.mode_machine, msg.tick, *imu.quaternion, *imu.gyroscope,
              *imu.accelerometer, *imu.rpy, imu.temperature]
    for m in msg.motor_state:
        values += (m.mode, m.q, m.dq, m.ddq, m.tau_est, *m.temperature, m.vol, *m.sensor, m.motorstate, *m.reserve)
    values += [*msg.wireless_remote, *msg.reserve, msg.crc]
    return _LOWSTATE_STRUCT.pack(*values)


def lowstate_to_c(msg: Any) -> np.ndarray:
    return np.frombuffer(_lowstate_c_bytes(msg), dtype=LOWSTATE_C).copy()


def lowstate_crc(msg: Any) -> int:
    return crc_of_c_bytes(_lowstate_c_bytes(msg))


# --- XCDR1 <-> C layout -------------------------------------------------------------------------------------
class Layout:
    """One fixed-size unitree_hg message: its SDK type, C layout and where XCDR1 and C differ."""

    def __init__(self, topic: str, idl_type: type, c_dtype: np.dtype, mode0: int,
                 new_sample: Callable[[], Any], to_c_bytes: Callable[[Any], bytes]) -> None:
        self.topic, self.idl_type, self.c_dtype = topic, idl_type, c_dtype
        self.mode0 = mode0  # C offset of motor[0].mode (4-aligned); XCDR puts it 2 bytes earlier
        self.new_sample, self.to_c_bytes = new_sample, to_c_bytes

    def xcdr_from_c(self, c: bytes) -> bytes:
        m0 = self.mode0
        return _XCDR1_LE_HEADER + c[: m0 - 2] + c[m0:m0 + 1] + b"\x00" + c[m0 + 4:]

    def c_from_xcdr(self, data: bytes) -> bytes:
        """C-layout bytes of a serialized sample (any encoding cyclonedds can read)."""
        if data[:4] != _XCDR1_LE_HEADER or len(data) != self.c_dtype.itemsize:
            return self.to_c_bytes(self.idl_type.deserialize(data))  # other encodings: the slow, sure path
        p, m0 = data[4:], self.mode0
        return p[: m0 - 2] + b"\x00\x00" + p[m0 - 2:m0 - 1] + b"\x00\x00\x00" + p[m0:]

    def record(self, c: bytes) -> np.void:
        return np.frombuffer(c, dtype=self.c_dtype)[0]

    def random_c_bytes(self, seed: int = 7) -> bytes:
        """A record with every numeric field set to a distinct-ish value (for the self-checks)."""
        rng = np.random.default_rng(seed)
        buf = np.frombuffer(self.to_c_bytes(self.new_sample()), dtype=self.c_dtype).copy()
        for name in buf.dtype.names:
            field = buf[name]
            for sub in field.dtype.names or (None,):
                if (sub or name).startswith("_"):
                    continue
                view = field[sub] if sub else field
                view[...] = rng.integers(1, 100, view.shape).astype(view.dtype)
        return buf.tobytes()

    def self_check(self) -> bool:
        """XCDR bytes we build == cyclonedds' own serialization, both ways, and our CRC == the SDK's."""
        try:
            c = self.random_c_bytes()
            wire = self.xcdr_from_c(c)
            sample = self.idl_type.deserialize(wire)
            return (self.to_c_bytes(sample) == c  # every value landed in its own field
                    and sample.serialize() == wire  # byte-identical to cyclonedds' serializer
                    and self.c_from_xcdr(wire) == c
                    and crc_of_c_bytes(c) == CRC().Crc(sample))  # and the CRC agrees with the SDK's
        except Exception:  # noqa: BLE001 - any mismatch means: use the SDK path
            return False


LOWCMD = LOWSTATE = None
if SDK_ERROR is None:
    LOWCMD = Layout(LOWCMD_TOPIC, LowCmd_, LOWCMD_C, 4, new_lowcmd, _lowcmd_c_bytes)
    LOWSTATE = Layout(LOWSTATE_TOPIC, LowState_, LOWSTATE_C, 72, new_lowstate, _lowstate_c_bytes)


# --- writers ----------------------------------------------------------------------------------------------
class FastWriter:
    """Publishes one unitree_hg message from a numpy C-layout record (``self.buf``), CRC set on every write.

    Fill ``self.buf`` (e.g. ``w.buf["motor_cmd"]["q"][0, 13:27] = q``), then call ``write()``. The SDK's
    ChannelPublisher does the DDS part; only serialisation is ours, verified at start-up (see module doc).
    """

    def __init__(self, layout: Layout) -> None:
        require_sdk()
        self.layout = layout
        self.buf = np.frombuffer(layout.to_c_bytes(layout.new_sample()), dtype=layout.c_dtype).copy()
        self._sample = layout.new_sample()
        self._payload = b""
        self.fast = layout.self_check()
        if self.fast:
            # DataWriter.write() calls sample.serialize(...): hand it the bytes we built.
            self._sample.serialize = self._serialize
        self._pub = ChannelPublisher(layout.topic, layout.idl_type)
        self._pub.Init()
        self.writes = 0
        self.errors = 0

    def _serialize(self, *args: Any, use_version_2: bool | None = None, **kwargs: Any) -> bytes:
        if use_version_2 or args or kwargs:  # not the encoding we verified: let the SDK type do it
            sample = self.layout.idl_type.deserialize(self._payload)
            return self.layout.idl_type.serialize(sample, *args, use_version_2=use_version_2, **kwargs)
        return self._payload

    def write(self) -> bool:
        self.buf["crc"] = crc_of_c_buffer(self.buf)
        c = self.buf.tobytes()
        if self.fast:
            self._payload = self.layout.xcdr_from_c(c)
            sample = self._sample
        else:
            sample = self.layout.idl_type.deserialize(self.layout.xcdr_from_c(c))
            sample.crc = CRC().Crc(sample)
        ok = bool(self._pub.Write(sample))
        if ok:
            self.writes += 1
        else:
            self.errors += 1
        return ok

    def close(self) -> None:
        close_sdk_channel(self._pub, "_ChannelPublisher__channel", "_Channel__writer", "_Writer__writer")


def lowcmd_writer() -> FastWriter:
    require_sdk()
    return FastWriter(LOWCMD)


def lowstate_writer() -> FastWriter:
    require_sdk()
    return FastWriter(LOWSTATE)


def close_sdk_channel(channel: Any, *entity_path: str) -> None:
    """Close an SDK ChannelPublisher/ChannelSubscriber and delete its cyclonedds entity on *this* thread.

    Why not the SDK's ``Close()`` alone: it only drops its reference to the DataReader/DataWriter
    (``del self.__reader``). While a listener callback runs (on_data_available at 250 Hz, on_publication_matched),
    Cyclone's listener thread holds the other reference (``Entity.get_entity``); when the callback returns, the
    entity's ``__del__`` runs *on the listener thread* and ``dds_delete`` waits for that entity's callbacks to
    finish - its own: the thread hangs, and every later delete with it (seen in CI: h1_arm_node never exited
    after SIGTERM; gdb: the "recv" thread in ``dds_delete`` from ``__del__`` from the listener's ``call``).
    So we keep a reference across ``Close()``, detach the listener (``dds_set_listener(NULL)`` waits for the
    callbacks in progress or already dispatched, through ctypes with the GIL released; none starts after it), then
    delete the entity here. ``entity_path``: the SDK's private attribute names (name-mangled) that lead to the
    entity; where they are missing, the SDK's Close alone."""
    entity: Any = channel
    for name in entity_path:
        entity = getattr(entity, name, None)
    try:
        channel.Close()
    except Exception:  # noqa: BLE001 - shutting down
        pass
    if entity is not None:
        try:
            entity.set_listener(None)  # before __del__ unregisters it: a late callback would get None
        except Exception:  # noqa: BLE001 - already deleted (shutting down): __del__ is then a no-op
            pass
        entity.__del__()  # cyclonedds' own delete; its later finalizer finds the entity gone and does nothing


# --- readers ----------------------------------------------------------------------------------------------
class RawSample:
    __slots__ = ("data", "sample_info")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sample_info = None


@functools.cache
def _raw_type(idl_type: type) -> type:
    """Stand-in for ``idl_type`` in a Topic: the same IDL description (the same type on the wire, so it matches
    the robot's writers), but DataReader.take() returns the raw serialized bytes instead of deserializing.
    One class per IDL type (cached): with a new class per subscriber, the 33rd Topic of the same name in one process
    made cyclonedds allocate until the kernel killed it (measured here: 32 subscribers created and closed, then
    24 GB and the OOM killer; with the cache, 45 and counting at 46 MB)."""

    def deserialize(cls, data, has_header=True, use_version_2=None):  # noqa: ARG001 - cyclonedds' signature
        return RawSample(bytes(data))

    def deserialize_key(cls, data, has_header=True, use_version_2=None):  # noqa: ARG001
        return None

    return type(f"Raw{idl_type.__name__}", (), {
        "__idl__": idl_type.__idl__,
        "__idl_typename__": idl_type.__idl_typename__,
        "deserialize": classmethod(deserialize),
        "deserialize_key": classmethod(deserialize_key),
    })


class RecordSubscriber:
    """Calls ``handler(record, crc_ok)`` for every sample on ``layout.topic``: the message as a numpy record in
    its C layout, and whether its CRC is right. Runs on Cyclone's listener thread (keep the handler short)."""

    def __init__(self, layout: Layout, handler: Callable[[np.void, bool], None]) -> None:
        require_sdk()
        self.layout = layout
        self.handler = handler
        self.raw = layout.self_check()
        self._sub = None
        if self.raw:
            try:
                self._sub = ChannelSubscriber(layout.topic, _raw_type(layout.idl_type))
                self._sub.Init(self._on_sample, 0)
            except Exception:  # noqa: BLE001 - this cyclonedds does not take the stand-in: use the SDK type
                self.raw, self._sub = False, None
        if self._sub is None:
            self._sub = ChannelSubscriber(layout.topic, layout.idl_type)
            self._sub.Init(self._on_sample, 0)

    def _on_sample(self, sample: Any) -> None:
        if isinstance(sample, RawSample):
            c = self.layout.c_from_xcdr(sample.data)
        else:
            c = self.layout.to_c_bytes(sample)
        record = self.layout.record(c)
        self.handler(record, crc_of_c_bytes(c) == int(record["crc"]))

    def close(self) -> None:
        close_sdk_channel(self._sub, "_ChannelSubscriber__channel", "_Channel__reader", "_Reader__reader")
