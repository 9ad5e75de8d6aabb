"""JSON as leadpipe stores and checks it: compact text that Redis can hold, and the
one "must be a JSON object" rule for payloads."""

from __future__ import annotations

import json


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (`object`, `array`, `string`, ...)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def object_problem(value: object, *, what: str = "payload") -> str | None:
    """None when `value` is a JSON object, else the one-line reason it is refused
    (`payload must be a JSON object, got array`)."""
    if isinstance(value, dict):
        return None
    return f"{what} must be a JSON object, got {json_type(value)}"


def storable(text: str) -> str:
    """`text`, with any lone surrogate as a `\\udXXX` escape: JSON lets a sender escape
    half a surrogate pair ("\\ud800"), which decodes to a str that UTF-8 (and so Redis)
    cannot hold. In a JSON text such a character sits inside a string literal, where
    the escape is exactly the JSON spelling of it, so `dumps` output stays valid JSON."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def dumps(value: object) -> str:
    """Compact JSON for record fields (always encodable as UTF-8)."""
    return storable(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))
