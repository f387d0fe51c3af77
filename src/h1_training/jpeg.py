"""JPEG helpers shared by every side (no rclpy, no package imports): the markers, OpenCV encode/decode in the
policies' colour order, the IJG quality estimate of a received frame, and the placeholder frame nobody can
mistake for a camera image (camera_node when a camera is missing, the seed converter for absent cameras)."""

from __future__ import annotations

import struct

import numpy as np

from h1_training.robot_model import display_name

SOI = b"\xff\xd8"   # start of image
EOI = b"\xff\xd9"   # end of image


# IJG standard luminance quantization table (JPEG Annex K.1); its sum is order-invariant (zigzag or not).
_STD_LUMA_SUM = sum((
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
))


def estimate_jpeg_quality(jpeg: bytes, scan_limit: int = 4096) -> int | None:
    """Estimate the IJG quality (1..100) from the first (luminance) quantization table; None if not found."""
    i, n = 2, min(len(jpeg), scan_limit)
    while i + 4 <= n:
        if jpeg[i] != 0xFF:
            return None
        marker = jpeg[i + 1]
        length = (jpeg[i + 2] << 8) | jpeg[i + 3]
        if marker == 0xDB:  # DQT
            pq = jpeg[i + 4] >> 4
            body = jpeg[i + 5:i + 5 + (128 if pq else 64)]
            if len(body) < (128 if pq else 64):
                return None
            values = struct.unpack(">64H", body) if pq else tuple(body)
            scale = 100.0 * sum(values) / _STD_LUMA_SUM  # IJG: table = base * scale / 100
            quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
            return int(round(min(100.0, max(1.0, quality))))
        if marker in (0xDA, 0xD9):  # start of scan / end: no table before it
            return None
        i += 2 + length
    return None


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_jpeg_rgb(rgb: np.ndarray, quality: int) -> bytes:
    """HxWx3 uint8 RGB (the policies' colour order) -> JPEG bytes."""
    import cv2

    return encode_jpeg(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), quality)


def decode_jpeg_rgb(data: bytes | bytearray | memoryview, size_wh: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A JPEG as HxWx3 uint8 RGB (the policies' colour order), resized to ``size_wh`` (W, H) when given;
    ValueError when it does not decode."""
    import cv2

    buf = np.frombuffer(data, np.uint8)
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
    img = cv2.imdecode(buf, rgb_flag if rgb_flag is not None else cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"undecodable JPEG ({buf.size} bytes)")
    if rgb_flag is None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    w, h = size_wh
    if w > 0 and h > 0 and img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return img


def render_placeholder(camera: str, reason: str, width: int = 640, height: int = 480, quality: int = 85) -> bytes:
    """A frame nobody can mistake for a camera image: hatched grey, 'PLACEHOLDER', the camera and the reason."""
    import cv2

    img = np.full((height, width, 3), 70, dtype=np.uint8)
    for x in range(-height, width, 40):  # diagonal hatching
        cv2.line(img, (x, 0), (x + height, height), (95, 95, 95), 8)
    cv2.rectangle(img, (0, 0), (width - 1, height - 1), (0, 0, 255), 6)
    scale = width / 640.0
    lines = [("PLACEHOLDER - NO CAMERA IMAGE", 1.0, (0, 0, 255)), (f"{display_name(camera)} ({camera})", 0.8,
             (255, 255, 255))]
    words, row = reason.split(), ""
    for word in words:  # wrap the reason to the frame width
        if len(row) + len(word) + 1 > 48:
            lines.append((row, 0.6, (220, 220, 220)))
            row = word
        else:
            row = f"{row} {word}".strip()
    if row:
        lines.append((row, 0.6, (220, 220, 220)))
    y = int(height * 0.35)
    cv2.rectangle(img, (int(10 * scale), y - int(36 * scale)), (width - int(10 * scale),
                  y + int(42 * scale) * (len(lines) - 1) + int(16 * scale)), (20, 20, 20), -1)
    for text, size, color in lines:
        cv2.putText(img, text, (int(20 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, size * scale, color,
                    max(1, int(2 * scale)), cv2.LINE_AA)
        y += int(42 * scale)
    return encode_jpeg(img, quality)
