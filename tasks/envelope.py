"""What kombu's virtual Message needs of a queue entry, checked before kombu sees it.

kombu would fail on a malformed envelope with a KeyError, which its Redis transport
counts among *connection* errors: the worker would reconnect for nothing, and the entry
would be lost without a trace. Here it is counted (`messages.unreadable`) and logged
without its content."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from tasks.runtime import runtime

log = logging.getLogger(__name__)


class UnreadableEntry(ValueError):
    """A queue entry that parses as JSON but is not a kombu envelope."""


def check_envelope(message: Any, codecs: Mapping[str, Any]) -> None:
    """What kombu's virtual Message needs of an envelope, or UnreadableEntry."""
    if not isinstance(message, dict):
        raise UnreadableEntry("the entry is not a JSON object")
    properties = message.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        raise UnreadableEntry("the envelope has no properties with a delivery tag")
    encoding = properties.get("body_encoding")
    if encoding is not None and not (
        isinstance(encoding, str) and (encoding.lower() == "utf-8" or encoding in codecs)
    ):
        raise UnreadableEntry("the body encoding is unknown")
    if not isinstance(message.get("body"), str | bytes | None):
        raise UnreadableEntry("the body is not a string")
    if not isinstance(message.get("headers"), dict | None):
        raise UnreadableEntry("the headers are not an object")
    info = properties.get("delivery_info")
    if not (
        isinstance(info, dict)
        and isinstance(info.get("exchange"), str)
        and isinstance(info.get("routing_key"), str)
    ):
        raise UnreadableEntry("the delivery info has no exchange and routing key")


def count_unreadable(exc: Exception) -> None:
    log.error(
        "unreadable entry on a queue dropped (%s): not a kombu message; "
        "send leads with Celery's send_task",
        type(exc).__name__,
    )
    try:
        runtime().store.count("messages.unreadable")
    except Exception:  # counting must never take the consumer down
        log.warning("could not count an unreadable queue entry", exc_info=True)
