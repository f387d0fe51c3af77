"""Camera thumbnails for the page: a JPEG shrunk by decoding at a reduced size (libjpeg's DCT scaling, far cheaper
than a full decode and resize), re-encoded small, as base64 for a ``data:`` URL."""

from __future__ import annotations

import base64

import cv2
import numpy as np

_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def thumbnail_jpeg(jpeg: bytes, width: int = 160, quality: int = 70) -> bytes | None:
    """A JPEG about ``width`` pixels wide (never wider than the source), or None when ``jpeg`` does not decode."""
    if not jpeg:
        return None
    buf = np.frombuffer(jpeg, np.uint8)
    try:
        header = cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_8)
    except cv2.error:
        return None
    if header is None:
        return None
    full_width = header.shape[1] * 8
    factor = max((f for f in _REDUCED if full_width / f >= width), default=1)
    img = cv2.imdecode(buf, _REDUCED[factor])
    if img is None:
        return None
    if img.shape[1] > width * 1.5:
        img = cv2.resize(img, (width, max(1, round(img.shape[0] * width / img.shape[1]))),
                         interpolation=cv2.INTER_AREA)
    ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return out.tobytes() if ok else None


def thumbnail_b64(jpeg: bytes, width: int = 160, quality: int = 70) -> str | None:
    small = thumbnail_jpeg(jpeg, width, quality)
    return None if small is None else base64.b64encode(small).decode("ascii")
