"""ParamSpec checks: the one place that says why a parameter value is rejected."""

import math

import pytest

from h1_training.params import ParamSpec, check_all, check_value


def test_ranges_and_types():
    rate = ParamSpec("rate_hz", 50.0, "sample rate", min=1.0, max=500.0)
    assert check_value(rate, 50) is None  # ints are fine for floats
    assert "below the minimum" in check_value(rate, 0.5)
    assert "above the maximum" in check_value(rate, 501.0)
    assert "finite" in check_value(rate, math.nan)
    assert "number" in check_value(rate, "fast")
    count = ParamSpec("episodes", 50, "episodes", min=1)
    assert "integer" in check_value(count, 2.5)
    assert "integer" in check_value(count, True)
    mode = ParamSpec("transport", "tcp", "link", choices=("tcp", "rtu"))
    assert "one of" in check_value(mode, "udp")
    flag = ParamSpec("auto", False, "auto")
    assert check_value(flag, 1) is not None


def test_invalid_default_is_a_programming_error():
    with pytest.raises(ValueError, match="invalid"):
        ParamSpec("x", 0.0, "x", min=1.0)
    with pytest.raises(ValueError):
        ParamSpec("x", None, "x")


def test_check_all_names_unknown_parameters():
    specs = [ParamSpec("a", 1, "a", min=0)]
    assert check_all(specs, {"a": 2}) == []
    assert check_all(specs, {"b": 2}) == ["unknown parameter 'b'"]
