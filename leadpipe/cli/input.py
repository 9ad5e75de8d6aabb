"""Reading leads from a file for the CLI (`validate`, `submit`).

A file holds a JSON object (one lead), a JSON array (one lead per element) or JSON
Lines (one lead per line; blank lines skipped). `-` reads standard input. In JSON
Lines a line that is not JSON becomes an `InputError` in its place, and the other
lines are still read. Lines are never echoed back (they may hold customer data).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: A file, a path, "-" for standard input, or an open text or binary stream.
Source = str | os.PathLike[str] | IO[str] | IO[bytes]


@dataclass(frozen=True, slots=True)
class InputError:
    """A document that could not be read; `position` is the line where reading failed."""

    position: int
    message: str

    def __str__(self) -> str:
        return f"line {self.position}: {self.message}"


@dataclass(frozen=True, slots=True)
class LeadInput:
    """The documents of a file, in order; `single` when it held one JSON object."""

    documents: list[object | InputError]
    single: bool


def _read_text(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        if os.fspath(source) == "-":
            data: str | bytes = sys.stdin.buffer.read()
        else:
            data = Path(source).read_bytes()
    else:
        data = source.read()
    if isinstance(data, bytes):
        data = data.decode("utf-8-sig", errors="replace")
    return data.removeprefix("\ufeff")


def _parse(text: str, line: int = 1) -> object:
    """The JSON value of `text`, or an InputError saying why (without quoting it).

    `line` is the line `text` starts on in the file.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = line + exc.lineno - 1
        return InputError(where, f"not valid JSON: {exc.msg} (column {exc.colno})")
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, very deep nesting
        return InputError(line, f"not valid JSON: {type(exc).__name__}")


def _json_lines(text: str) -> list[object | InputError] | None:
    """One document per non-blank line, or None when `text` does not look like JSON Lines.

    It does when it has several non-blank lines and one of them is a whole JSON object
    (a broken pretty-printed document has none, and is better reported as one error).
    Lines are split on "\n" only: a JSON string may hold U+2028 and friends.
    """
    lines = enumerate(text.split("\n"), start=1)
    documents = [_parse(line, number) for number, line in lines if line.strip()]
    if len(documents) > 1 and any(isinstance(document, dict) for document in documents):
        return documents
    return None


def read_lead_input(source: Source) -> LeadInput:
    """Every document of `source`, in order (see the module docstring).

    Raises OSError when the file cannot be read.
    """
    text = _read_text(source)
    if not text.strip():
        return LeadInput([], single=False)
    value = _parse(text)
    if not isinstance(value, InputError):
        if isinstance(value, list):
            return LeadInput(list(value), single=False)
        return LeadInput([value], single=isinstance(value, dict))
    documents = _json_lines(text)
    return LeadInput(documents if documents is not None else [value], single=False)


def read_lead_documents(source: Source) -> list[object | InputError]:
    """The documents of `source`: leads as parsed JSON, unreadable ones as InputError."""
    return read_lead_input(source).documents
