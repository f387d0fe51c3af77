"""The one timestamp conversion of the package (no rclpy): ROS ``builtin_interfaces/Time`` <-> nanoseconds or
float seconds. Stamps are objects with ``sec`` / ``nanosec`` fields (a message's ``header.stamp``); the
functions read and write those fields and import no ROS package.

    set_stamp(msg.header.stamp, seconds=time.time())       # publish with the capture time
    recorder.slots.set_qpos(q, stamp_ns(msg.header.stamp))  # receive: exact integer nanoseconds
"""

from __future__ import annotations

from typing import Any

NS_PER_S = 1_000_000_000


def split_ns(ns: int) -> tuple[int, int]:
    """(sec, nanosec) of integer nanoseconds (``nanosec`` in 0..1e9-1, also for negative times)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec, nanosec


def seconds_to_ns(seconds: float) -> int:
    """Float seconds (``time.time()``) to integer nanoseconds, rounded to the nearest."""
    return int(round(seconds * NS_PER_S))


def stamp_ns(stamp: Any) -> int:
    """Integer nanoseconds of a ROS Time (``header.stamp``)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def stamp_seconds(stamp: Any) -> float:
    return stamp_ns(stamp) / NS_PER_S


def set_stamp(stamp: Any, *, ns: int | None = None, seconds: float | None = None) -> Any:
    """Write a time (integer ``ns`` or float ``seconds``) into a ROS Time in place; returns it."""
    if (ns is None) == (seconds is None):
        raise ValueError("give exactly one of ns or seconds")
    stamp.sec, stamp.nanosec = split_ns(ns if ns is not None else seconds_to_ns(seconds))  # type: ignore[arg-type]
    return stamp
