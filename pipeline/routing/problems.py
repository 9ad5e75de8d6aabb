"""Routing-file problems in the operator's words: `defaults.services[0].code: ...`.

Turns pydantic's errors on the schema (`pipeline.routing.schema`) into one line per
problem, naming the dotted TOML key. Error types that start with `routing_` are raised
by the schema's own validators, whose message is already written for the operator;
pydantic's own types get a message here, with the allowed keys or values read from the
schema itself, so adding a field or a table needs no new message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

#: Prefix of the error types the schema's validators raise (`routing_blank`, ...).
OWN_ERROR_PREFIX = "routing_"
#: Longer values are described by their type only in messages.
MAX_SHOWN_CHARS = 40

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def describe(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One `key: message` line per error of validating `root`."""
    return [_problem(error, root) for error in exc.errors(include_url=False)]


def _problem(error: ErrorDetails, root: type[BaseModel]) -> str:
    loc = tuple(part for part in error["loc"] if part != "[key]")
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"{_path(loc[:-1]) or 'file'}: missing {loc[-1]}"
    if kind == "extra_forbidden":
        allowed = _model_keys(_annotation_at(root, loc[:-1]))
        return f"{_path(loc)}: unknown key (expected one of {', '.join(allowed)})"
    annotation = _annotation_at(root, loc)
    if kind.startswith(OWN_ERROR_PREFIX) or "[key]" in error["loc"]:
        message = error["msg"]
    elif kind == "literal_error":
        choices = ", ".join(str(c) for c in get_args(annotation))
        message = f"must be one of {choices}, got {got(value)['got']}"
    elif kind == "string_type":
        message = f"must be a non-empty string, got {_show(value)}"
    elif kind == "list_type":
        message = f"must be an array of tables, got {_show(value)}"
    elif get_origin(annotation) is dict:
        message = f"must be a table of [{_path(loc)}.<name>] sections, got {_show(value)}"
    elif _is_model(annotation):
        message = f"must be a table (a [section] or {{ key = value }}), got {_show(value)}"
    else:
        message = error["msg"]
    return f"{_path(loc)}: {message}"


def _unwrap(annotation: Any) -> Any:
    """`X` of `Annotated[X, ...]` and of `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is UnionType:
            options = [a for a in get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _annotation_at(root: type[BaseModel], loc: Sequence[int | str]) -> Any:
    """The type the schema expects at `loc` (None when the location is unknown)."""
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if _is_model(annotation):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]
        else:
            return None
    return _unwrap(annotation)


def _model_keys(annotation: Any) -> tuple[str, ...]:
    return tuple(annotation.model_fields) if _is_model(annotation) else ()


def table_key(name: str) -> str:
    """A table name as TOML would spell it in a dotted key."""
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'


def _path(loc: Sequence[int | str]) -> str:
    """`("defaults", "services", 0, "code")` -> `defaults.services[0].code`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + table_key(part)
    return path


def got(value: object) -> dict[str, str]:
    """`{"got": ...}` for a message: a short string quoted, anything else described."""
    if isinstance(value, str) and len(value) <= MAX_SHOWN_CHARS:
        return {"got": repr(value)}
    return {"got": _show(value)}


def _show(value: object) -> str:
    """A value for an error message: its TOML type, and the value when short."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
        date: "a date",
    }.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown}" if len(shown) <= MAX_SHOWN_CHARS else kind
