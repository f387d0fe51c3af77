"""Inspire RH56 register map and codec (no I/O, no rclpy): addresses, byte blocks, raw <-> normalized, the
hand command check.

Register map (holding registers; 6 x uint16 per block unless noted), from TechShare-inc/inspire_demos
(``inspire_demos/inspire_modbus.py`` + ``inspire_serial.py`` regdict) and the inspire_hand_sdk:

    HAND_ID 1000, CLEAR_ERROR 1004, POS_SET 1474, ANGLE_SET 1486, FORCE_SET 1498, SPEED_SET 1522,
    POS_ACT 1534, ANGLE_ACT 1546, FORCE_ACT 1582, CURRENT 1594,
    ERROR 1606 (3 regs = 6 bytes), STATUS 1612 (3 regs), TEMP 1618 (3 regs)

Values 0..1000 with 1000 = open; writing 0xFFFF (-1) to a *_SET register leaves that finger as it is
(inspire_demos ``set_angle`` "special placeholder value"). Byte blocks (ERROR/STATUS/TEMP) carry two
fingers per register, low byte first (inspire_demos ``_read6_8bit``). DOF order: pinky, ring, middle,
index, thumb bend, thumb rotation. STATUS / ERROR codes per finger follow the RH56 user manual
(register table of the RH56DFX/DFTP manuals, as used by the inspire_hand_sdk).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from h1_training.robot_model import HAND_DOF_NAMES, HAND_RAW_MAX

# --- register map (TechShare-inc/inspire_demos regdict, Gen3 RH56) ----------------------------------------
HAND_ID = 1000
CLEAR_ERROR = 1004
POS_SET = 1474
ANGLE_SET = 1486
FORCE_SET = 1498
SPEED_SET = 1522
POS_ACT = 1534
ANGLE_ACT = 1546
FORCE_ACT = 1582
CURRENT = 1594
ERROR = 1606  # 3 registers, one byte per finger
STATUS = 1612  # 3 registers, one byte per finger
TEMP = 1618  # 3 registers, one byte per finger
NUM_DOF = 6
KEEP = 0xFFFF  # "-1": leave this finger's setpoint unchanged

# STATUS byte per finger (RH56 manual).
STATUS_TEXT = {
    0: "releasing",
    1: "grasping",
    2: "position reached",
    3: "force reached",
    5: "current protection stop",
    6: "stall stop",
    7: "fault stop",
}
# ERROR bits per finger (RH56 manual).
ERROR_BITS = {
    0: "stall",
    1: "over-temperature",
    2: "over-current",
    3: "motor fault",
    4: "communication fault",
}

DEFAULT_TCP_PORT = 6000  # Inspire Modbus TCP default 192.168.11.210:6000, unit 1 (DESIGN.md §3)
DEFAULT_BAUDRATE = 115200


def split_bytes(registers: Sequence[int]) -> list[int]:
    """Byte blocks: each 16-bit register holds two fingers, low byte first (inspire_demos _read6_8bit)."""
    out: list[int] = []
    for reg in registers:
        out.append(int(reg) & 0xFF)
        out.append((int(reg) >> 8) & 0xFF)
    return out


def join_bytes(values: Sequence[int]) -> list[int]:
    """Inverse of ``split_bytes`` (used by the emulator)."""
    if len(values) % 2:
        raise ValueError("byte blocks have an even number of values")
    return [(int(values[i]) & 0xFF) | ((int(values[i + 1]) & 0xFF) << 8) for i in range(0, len(values), 2)]


def describe_errors(error_bytes: Sequence[int]) -> str:
    """'index: stall; thumb_bend: over-current' or '' when all clear."""
    parts = []
    for dof, code in zip(HAND_DOF_NAMES, error_bytes):
        if code:
            bits = [text for bit, text in ERROR_BITS.items() if code & (1 << bit)] or [f"code {code}"]
            parts.append(f"{dof}: {', '.join(bits)}")
    return "; ".join(parts)


def normalized_to_raw(values: Sequence[float]) -> tuple[np.ndarray, bool]:
    """0..1 (1 = open) -> register values 0..1000, clamped. Returns (raw, clamped?).

    Raises ValueError for non-finite input: a NaN command must never reach a hand.
    """
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"non-finite hand command {arr.tolist()}")
    clipped = np.clip(arr, 0.0, 1.0)
    raw = np.rint(clipped * HAND_RAW_MAX).astype(np.int64)
    return raw, bool(np.any(clipped != arr))


def clamp_raw(values: Sequence[int]) -> np.ndarray:
    """Clamp raw setpoints to 0..1000, keeping KEEP (0xFFFF / -1) as 'unchanged'."""
    arr = np.asarray(values, dtype=np.int64)
    keep = (arr == KEEP) | (arr == -1)
    out = np.clip(arr, 0, HAND_RAW_MAX)
    out[keep] = KEEP
    return out


# --- hand commands ---------------------------------------------------------------------------------------
@dataclass
class HandCommandParse:
    """Result of checking one 12-joint hand command: raw targets per hand (None = hand not addressed)."""

    left: np.ndarray | None = None
    right: np.ndarray | None = None
    clamped: bool = False
    notes: list[str] = field(default_factory=list)


def parse_hand_command(
    names: Sequence[str], positions: Sequence[float], joint_names: Sequence[str]
) -> HandCommandParse:
    """Check a hand command (normalized 0..1, 1 = open) and turn it into raw ANGLE_SET targets.

    Without names: exactly 12 positions in ``joint_names`` order. With names: each must be one of
    ``joint_names`` (any subset, e.g. one hand); fingers not named are left unchanged (KEEP).
    Raises ValueError with an operator-readable reason (wrong length, unknown name, NaN/inf).
    """
    n_all = len(joint_names)
    if names:
        if len(names) != len(positions):
            raise ValueError(f"{len(names)} names but {len(positions)} positions")
        index = {n: i for i, n in enumerate(joint_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"unknown hand joint names {unknown}")
        if len(set(names)) != len(names):
            raise ValueError("duplicate joint names")
        if not all(math.isfinite(float(v)) for v in positions):
            raise ValueError(f"non-finite hand command {list(positions)}")
        full = np.zeros(n_all)
        given = np.zeros(n_all, dtype=bool)
        for n, v in zip(names, positions):
            full[index[n]] = v
            given[index[n]] = True
    else:
        if len(positions) != n_all:
            raise ValueError(f"expected {n_all} positions (or names), got {len(positions)}")
        full = np.asarray(positions, dtype=np.float64)
        if not np.all(np.isfinite(full)):
            raise ValueError(f"non-finite hand command {full.tolist()}")
        given = np.ones(n_all, dtype=bool)
    raw, clamped = normalized_to_raw(np.where(given, full, 0.0))
    raw[~given] = KEEP
    out = HandCommandParse(clamped=clamped)
    half = n_all // 2
    if given[:half].any():
        out.left = raw[:half]
    if given[half:].any():
        out.right = raw[half:]
    return out
