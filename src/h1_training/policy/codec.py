"""msgpack with NumPy arrays: the policy wire codec (server and client share it; no pickle anywhere).

Wire-compatible with ``openpi_client.msgpack_numpy`` (openpi ``packages/openpi-client``): an array travels as the
map ``{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": [..]}`` and a NumPy scalar as
``{b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}``. Object, void (structured) and char dtypes
are refused both ways: they are how pickle sneaks in, and no observation or action needs them.

Decoded arrays are read-only views on the received buffer (as in openpi); copy before writing into one.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("O", "V", "c")  # object, void/structured, char


class CodecError(ValueError):
    """A frame that is not valid msgpack-numpy (bad dtype, size mismatch, not msgpack)."""


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.kind in _REFUSED_KINDS or dtype.hasobject:
        raise CodecError(f"unsupported dtype {dtype.str!r} (object/structured/char arrays are not allowed)")


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            shape = tuple(map(int, obj[b"shape"]))
            data = obj[b"data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed ndarray map: {exc}") from exc
        _check_dtype(dtype)
        if not isinstance(data, (bytes, bytearray)):
            raise CodecError("ndarray data must be bytes")
        if min(shape, default=0) < 0:
            raise CodecError(f"negative ndarray shape {shape}")
        expected = math.prod(shape) * dtype.itemsize  # Python ints: exact, no overflow (np.prod costs ~10 us)
        if expected != len(data):
            raise CodecError(f"ndarray of shape {shape} and dtype {dtype.str} needs {expected} bytes, got {len(data)}")
        return np.ndarray(buffer=data, dtype=dtype, shape=shape)
    if b"__npgeneric__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"malformed numpy scalar map: {exc}") from exc
        _check_dtype(dtype)
        return dtype.type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, str, numbers, bytes, NumPy arrays and scalars)."""
    try:
        return msgpack.packb(obj, default=_encode, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise CodecError(str(exc)) from exc


def unpackb(data: bytes) -> Any:
    """Decode one frame; raises :class:`CodecError` on anything that is not valid msgpack-numpy."""
    try:
        # strict_map_key=False: openpi payloads are str-keyed, but our own metadata may carry int keys.
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"not a msgpack-numpy frame: {exc}") from exc


class Packer:
    """A reusable packer (what ``openpi_client.msgpack_numpy.Packer`` offers), for hot loops."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(default=_encode, use_bin_type=True)

    def pack(self, obj: Any) -> bytes:
        try:
            return self._packer.pack(obj)
        except (TypeError, ValueError) as exc:
            self._packer.reset()
            raise CodecError(str(exc)) from exc
