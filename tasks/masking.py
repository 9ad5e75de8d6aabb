"""How a task's arguments are shown outside the worker: events, Flower, `inspect`.

One rule, used by the worker (`tasks.request.MaskedRequest`) and by `leadpipe flower`
(which applies it again to whatever any sender published): a lead payload is never
shown; the partner and `received_at` are (they name a company and a time, not a
person); a task that carries only a lead id shows it. Keyword names a sender invented
are masked too, since a name can hold data as well as a value can.

Both functions are idempotent (masking a masked repr gives it back), so Flower can
apply them to reprs the worker already masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: The payload, wherever it stands in the arguments.
PAYLOAD_MASK = "<lead payload masked>"
#: A value (or keyword name) that is not shown.
VALUE_MASK = "<masked>"
#: Arguments of a message whose arguments cannot be read or shown at all.
MASKED_ARGS = f"({PAYLOAD_MASK!r},)"
MASKED_KWARGS = f"{{{VALUE_MASK!r}: {VALUE_MASK!r}}}"

#: What a partner name looks like: a company's short name, never an address.
_PARTNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
#: An ISO 8601 time, and nothing else.
_ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\d([T ][0-9:.]+)?(Z|[+-]\d\d:?\d\d)?$")
#: The payload mask with the partner it named: `<lead payload masked; partner acme>`.
_PAYLOAD_WITH_PARTNER = re.compile(r"^<lead payload masked; partner (.+)>$")
#: Keyword arguments shown as sent, with the rule each value must meet.
_SHOWN_KWARGS = {"partner": _PARTNER, "received_at": _ISO_TIME}
#: Keyword names `leads.ingest` knows (their values may still be masked).
_KNOWN_KWARGS = frozenset({*_SHOWN_KWARGS, "payload"})


def safe_partner(value: object) -> str | None:
    """`value` when it looks like a partner's name, else None."""
    if isinstance(value, str) and _PARTNER.fullmatch(value.strip()):
        return value.strip()
    return None


def _payload_mask(first: object) -> str:
    partner = None
    if isinstance(first, Mapping):
        partner = safe_partner(first.get("partner"))
    elif isinstance(first, str) and (found := _PAYLOAD_WITH_PARTNER.fullmatch(first)):
        partner = safe_partner(found.group(1))
    return f"<lead payload masked; partner {partner}>" if partner else PAYLOAD_MASK


def masked_args(args: object) -> str:
    """The repr of a lead task's positional arguments with the payload masked.

    `('<lead payload masked; partner acme>',)` when the payload names a partner;
    extra positional arguments are masked one by one; anything but a list or tuple
    is masked whole."""
    if not isinstance(args, list | tuple):
        return MASKED_ARGS
    if not args:
        return "()"
    shown = [_payload_mask(args[0]), *(VALUE_MASK for _ in args[1:])]
    return repr(tuple(shown))


def masked_kwargs(kwargs: object) -> str:
    """The repr of a lead task's keyword arguments: `partner` and `received_at` as
    sent (when they look like a partner name and a time), every other value masked,
    and the names a sender invented collapsed into one `'<masked>'` entry."""
    if not isinstance(kwargs, Mapping):
        return MASKED_KWARGS
    shown: dict[str, str] = {}
    for key, value in kwargs.items():
        if key not in _KNOWN_KWARGS:
            shown[VALUE_MASK] = VALUE_MASK
            continue
        rule = _SHOWN_KWARGS.get(key)
        text = value.strip() if isinstance(value, str) else None
        shown[key] = text if rule and text is not None and rule.fullmatch(text) else VALUE_MASK
    return repr(shown)
