"""stamps: the one ROS Time <-> ns / seconds conversion, on real builtin_interfaces/Time messages."""

from __future__ import annotations

import pytest
from builtin_interfaces.msg import Time

from h1_training.stamps import set_stamp, split_ns, stamp_ns, stamp_seconds


def test_round_trips_exactly_in_nanoseconds():
    ns = 1_733_400_000_123_456_789
    t = set_stamp(Time(), ns=ns)
    assert (t.sec, t.nanosec) == (1_733_400_000, 123_456_789) and stamp_ns(t) == ns


def test_seconds_round_to_the_nearest_nanosecond_and_keep_nanosec_in_range():
    t = set_stamp(Time(), seconds=12.9999999999)
    assert (t.sec, t.nanosec) == (13, 0)
    assert stamp_seconds(set_stamp(Time(), seconds=1.25)) == 1.25
    assert split_ns(-1) == (-1, 999_999_999)
    with pytest.raises(ValueError):
        set_stamp(Time(), ns=1, seconds=1.0)
