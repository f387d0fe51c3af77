"""ROS 2 messages as JSON for Foxglove, and their JSON schemas (no rclpy import).

Foxglove decodes a ``json`` channel into the same object shape that the official ``foxglove_bridge`` produces
from CDR (field names as in the ``.msg``, ``header.stamp`` as ``{sec, nanosec}``), so a panel written against
either bridge reads the other. Works from the generated Python classes' own introspection
(``get_fields_and_field_types``); rosidl_runtime_py is not installed here.

Type strings are the ones rosidl's Python classes report: ``int32``, ``string``, ``string<=10``,
``sequence<float64>``, ``sequence<pkg/Name, 5>``, ``float64[3]``, ``pkg/Name``.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping
from typing import Any

_INTEGER = {"byte", "octet", "char", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}
_FLOAT = {"float", "double", "float32", "float64"}
_INT_RANGE = {"int8": (-(2**7), 2**7), "uint8": (0, 2**8), "byte": (0, 2**8), "octet": (0, 2**8), "char": (0, 2**8),
              "int16": (-(2**15), 2**15), "uint16": (0, 2**16), "int32": (-(2**31), 2**31), "uint32": (0, 2**32),
              "int64": (-(2**63), 2**63), "uint64": (0, 2**64)}
_SEQUENCE = re.compile(r"^sequence<(.+?)(?:,\s*\d+)?>$")
_ARRAY = re.compile(r"^(.+)\[(\d+)\]$")
_BOUNDED_STRING = re.compile(r"^w?string<=\d+$")


def split_type(type_name: str) -> tuple[str, str, str]:
    """``pkg/msg/Name`` or ``pkg/Name`` -> (pkg, kind, Name); kind defaults to ``msg``."""
    parts = type_name.strip("/").split("/")
    if len(parts) == 3 and parts[1] in ("msg", "srv", "action"):
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return parts[0], "msg", parts[1]
    raise ValueError(f"not a ROS interface type name: {type_name!r}")


def full_type(type_name: str, kind: str = "msg") -> str:
    """Normalise to ``pkg/kind/Name`` (the form ``ros2 topic list -t`` prints)."""
    pkg, given, name = split_type(type_name)
    return f"{pkg}/{given if type_name.count('/') == 2 else kind}/{name}"


def import_type(type_name: str, kind: str = "msg") -> Any:
    """The generated Python class for ``pkg/msg/Name`` (or ``pkg/srv/Name``); ImportError when not installed."""
    pkg, given, name = split_type(full_type(type_name, kind))
    module = importlib.import_module(f"{pkg}.{given}")
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise ImportError(f"{pkg}.{given} has no {name}") from exc


def _element_type(field_type: str) -> tuple[str, int | None] | None:
    """For a sequence/array type: (element type, fixed length or None); None for a scalar."""
    m = _SEQUENCE.match(field_type)
    if m:
        return m.group(1), None
    m = _ARRAY.match(field_type)
    if m:
        return m.group(1), int(m.group(2))
    return None


def _is_nested(field_type: str) -> bool:
    return "/" in field_type


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN/Inf: JSON.parse would reject the message


def _scalar_to_json(field_type: str, value: Any) -> Any:
    if _is_nested(field_type):
        return message_to_dict(value)
    if field_type in _FLOAT:
        return _finite(float(value))
    if field_type in ("byte", "octet"):
        return value[0] if isinstance(value, (bytes, bytearray)) else int(value)
    if field_type == "boolean" or field_type == "bool":
        return bool(value)
    if field_type in _INTEGER:
        return int(value)
    return value  # strings


def message_to_dict(msg: Any) -> dict[str, Any]:
    """A ROS message as plain JSON-able data (lists, dicts, numbers, strings; non-finite floats -> null)."""
    out: dict[str, Any] = {}
    for field, field_type in msg.get_fields_and_field_types().items():
        value = getattr(msg, field)
        element = _element_type(field_type)
        if element is None:
            out[field] = _scalar_to_json(field_type, value)
        else:
            etype = element[0]
            if isinstance(value, (bytes, bytearray)):
                out[field] = list(value)
            else:
                out[field] = [_scalar_to_json(etype, v) for v in value]
    return out


def _scalar_from_json(path: str, field_type: str, value: Any, cls_for: Any) -> Any:
    if _is_nested(field_type):
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected an object for {field_type}, got {value!r}")
        nested = cls_for(field_type)()
        fill_message(nested, value, path)
        return nested
    if field_type in _FLOAT:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if field_type in ("boolean", "bool"):
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
        return value
    if field_type in _INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        low, high = _INT_RANGE[field_type]
        if not low <= value < high:  # rosidl's setters check only with ROS_PYTHON_CHECK_FIELDS; serialising would fail
            raise ValueError(f"{path}: {value!r} does not fit {field_type}")
        if field_type in ("byte", "octet"):
            return bytes([value])
        return value
    if field_type in ("string", "wstring") or _BOUNDED_STRING.match(field_type):
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return value
    raise ValueError(f"{path}: unsupported field type {field_type}")


def fill_message(msg: Any, data: Mapping[str, Any], path: str = "") -> Any:
    """Set the fields of ``msg`` from ``data`` (fields not given keep their defaults).

    Unknown fields and wrong types raise ValueError naming the field, so a service caller learns what was wrong.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{path or 'request'}: expected a JSON object, got {type(data).__name__}")
    fields = msg.get_fields_and_field_types()
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            raise ValueError(f"{where}: no such field in {type(msg).__name__} (fields: {', '.join(fields)})")
        field_type = fields[key]
        element = _element_type(field_type)
        try:
            if element is None:
                converted = _scalar_from_json(where, field_type, value, import_type)
            else:
                if not isinstance(value, list):
                    raise ValueError(f"{where}: expected a list, got {value!r}")
                etype, length = element
                if length is not None and len(value) != length:
                    raise ValueError(f"{where}: expected {length} elements, got {len(value)}")
                converted = [_scalar_from_json(f"{where}[{i}]", etype, v, import_type) for i, v in enumerate(value)]
                if etype in ("byte", "octet"):
                    converted = [bytes(c) for c in converted]
            setattr(msg, key, converted)
        except (AssertionError, TypeError, OverflowError) as exc:  # rosidl setters check ranges with assert
            raise ValueError(f"{where}: {value!r} does not fit {field_type}") from exc
    return msg


def _scalar_schema(field_type: str, seen: frozenset[str]) -> dict[str, Any]:
    if _is_nested(field_type):
        return message_schema(field_type, seen)
    if field_type in _FLOAT:
        return {"type": "number"}
    if field_type in ("boolean", "bool"):
        return {"type": "boolean"}
    if field_type in _INTEGER:
        return {"type": "integer"}
    return {"type": "string"}


def field_schema(field_type: str, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    element = _element_type(field_type)
    if element is None:
        return _scalar_schema(field_type, seen)
    schema: dict[str, Any] = {"type": "array", "items": _scalar_schema(element[0], seen)}
    if element[1] is not None:
        schema["minItems"] = schema["maxItems"] = element[1]
    return schema


def message_schema(type_name_or_cls: Any, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    """JSON schema (draft 2020-12 subset Foxglove reads) of a message class or type name."""
    cls = import_type(type_name_or_cls) if isinstance(type_name_or_cls, str) else type_name_or_cls
    title = ros_type_name(cls)
    if title in seen:  # recursive types do not occur in ROS, but never loop
        return {"type": "object"}
    fields = cls.get_fields_and_field_types()
    return {
        "title": title,
        "type": "object",
        "properties": {name: field_schema(t, seen | {title}) for name, t in fields.items()},
    }


def ros_type_name(cls: Any) -> str:
    """``pkg/msg/Name`` of a generated message/service class (its module is ``pkg.msg._name``)."""
    module = cls.__module__.split(".")
    return f"{module[0]}/{module[1]}/{cls.__name__}"
