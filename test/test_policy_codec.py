"""The policy wire codec: round trips, byte compatibility with openpi-client, and refusals (no pickle)."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy as openpi_codec

from h1_training.policy import codec


def _obs() -> dict:
    rng = np.random.default_rng(0)
    return {
        "images": {name: rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
                   for name in ("cam_head", "cam_left_wrist", "cam_right_wrist")},
        "state": rng.standard_normal(14).astype(np.float32),
        "prompt": "pick up the cup",
        "step": np.int64(7),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 14), np.float64),
    }


def _assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


def test_round_trip() -> None:
    obs = _obs()
    _assert_same(obs, codec.unpackb(codec.packb(obs)))
    _assert_same(obs, codec.unpackb(codec.Packer().pack(obs)))


def test_compatible_with_openpi_client_both_ways() -> None:
    obs = _obs()
    _assert_same(obs, openpi_codec.unpackb(codec.packb(obs)))
    _assert_same(obs, codec.unpackb(openpi_codec.packb(obs)))
    _assert_same(obs, codec.unpackb(openpi_codec.Packer().pack(obs)))


def test_non_contiguous_arrays_are_packed_in_logical_order() -> None:
    a = np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2]
    np.testing.assert_array_equal(codec.unpackb(codec.packb(a)), a)


@pytest.mark.parametrize("bad", [np.array([object()], dtype=object), np.zeros(2, dtype=[("a", "<f4")])])
def test_refuses_object_and_structured_arrays(bad) -> None:
    with pytest.raises(codec.CodecError):
        codec.packb({"x": bad})


def test_refuses_object_dtype_on_decode() -> None:
    frame = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(codec.CodecError, match="dtype"):
        codec.unpackb(frame)


def test_refuses_size_mismatch_and_garbage() -> None:
    frame = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]})
    with pytest.raises(codec.CodecError, match="needs 8 bytes"):
        codec.unpackb(frame)
    with pytest.raises(codec.CodecError):
        codec.unpackb(b"\xc1")  # never-used msgpack byte
    with pytest.raises(codec.CodecError):
        codec.packb({"x": object()})


def test_decoded_arrays_are_read_only_views() -> None:
    out = codec.unpackb(codec.packb(np.ones(3, np.float32)))
    assert not out.flags.writeable
