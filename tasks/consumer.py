"""A worker Consumer that turns unreadable messages into dead letters.

Celery's own handlers log the message body (customer data) and drop the message.
Here a message that cannot be decoded, is not JSON (a pickle is refused before it is
deserialized), or names a task we do not have, becomes a dead `invalid` record under
its message id, so an operator sees it in `leadpipe dlq list`; a message without a
readable id is counted and logged without its body. The worker never stops for one.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from typing import Any

import redis
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from tasks.queues import INGEST_TASK
from tasks.runtime import runtime
from tasks.store_errors import TALLY

log = logging.getLogger(__name__)

#: Names of Celery's built-in tasks, which a leadpipe worker never runs.
BUILTIN_TASK_PREFIX = "celery."
#: Pause before a bad message goes back to its queue after a store error, seconds.
STORE_ERROR_PAUSE_SECONDS = 1.0
#: Longest usable message id, characters (CONTRACT section 4).
MAX_LEAD_ID_CHARS = 255
#: Unicode categories an id must not contain: controls, lone surrogates (not storable
#: as UTF-8) and line/paragraph separators (they would split a log line).
_UNUSABLE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def usable_lead_id(candidate: object) -> bool:
    """A message id that can name a lead: 1-255 characters, none of them a control.

    Anything else a sender may choose works (`/`, `:`, spaces, any script): the id is
    escaped before it becomes part of a key (store/keys.py) or a header."""
    return (
        isinstance(candidate, str)
        and 0 < len(candidate) <= MAX_LEAD_ID_CHARS
        and not any(unicodedata.category(c) in _UNUSABLE_CATEGORIES for c in candidate)
    )


def escaped_id(candidate: object) -> str:
    """An unusable id as a log can show it: escaped, quoted, cut to a bounded length."""
    text = candidate if isinstance(candidate, str) else repr(candidate)
    shown = ascii(text[:80])
    return shown if len(text) <= 80 else f"{shown}... ({len(text)} characters)"


def _raw_id(message: Any) -> object:
    headers = getattr(message, "headers", None) or {}
    candidate = headers.get("id") if isinstance(headers, dict) else None
    if candidate is None:
        candidate = (getattr(message, "properties", None) or {}).get("correlation_id")
    return candidate


def _lead_id(message: Any) -> str | None:
    candidate = _raw_id(message)
    return candidate if isinstance(candidate, str) and usable_lead_id(candidate) else None


def _describe(message: Any) -> dict[str, Any]:
    body = getattr(message, "body", b"") or b""
    headers = getattr(message, "headers", None) or {}
    return {
        "unreadableMessage": True,
        "contentType": getattr(message, "content_type", None),
        "contentEncoding": getattr(message, "content_encoding", None),
        "task": headers.get("task") if isinstance(headers, dict) else None,
        "bytes": len(body),
    }


def dead_letter_message(message: Any, problem: str) -> bool:
    """Record an unusable message as a dead lead, or count it when it has no id.
    False when the store refused (the caller then requeues the message: nothing is
    dropped for a store error)."""
    lead_id = _lead_id(message)
    try:
        if lead_id is None:
            runtime().stages.drop_message(
                f"unreadable, without a usable id ({escaped_id(_raw_id(message))}): {problem}"
            )
            return True
        runtime().stages.unreadable(lead_id, problem, _describe(message))
    except redis.RedisError as exc:
        TALLY.note(exc, f"unreadable message {lead_id or '(no id)'}: requeued")
        time.sleep(STORE_ERROR_PAUSE_SECONDS)
        return False
    except Exception:  # a broken message must never take the consumer down
        log.exception("could not record unreadable message %s", lead_id or "(no id)")
    return True


def _settle(message: Any, recorded: bool, errors: Any, *, ack: bool = False) -> None:
    """Done with a bad message: acknowledged (or rejected) once recorded, else back on
    its queue for when the store answers."""
    if not recorded:
        message.reject_log_error(log, errors, requeue=True)
    elif ack:
        message.ack()
    else:
        message.reject_log_error(log, errors)


class LeadConsumer(Consumer):
    """Celery's Consumer, with bad messages dead-lettered instead of logged."""

    def update_strategies(self) -> None:
        """Consume our own tasks only: Celery's built-ins (`celery.backend_cleanup`,
        `celery.chord_unlock`, ...) have no business on a lead queue, so a message
        naming one is an unknown task (a dead letter), not something to run."""
        super().update_strategies()
        for name in [n for n in self.strategies if n.startswith(BUILTIN_TASK_PREFIX)]:
            del self.strategies[name]

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler, made to survive a message whose shape it does not expect.

        A well-formed envelope can still carry a body that is not `[args, kwargs,
        embed]` (or headers of the wrong types); Celery then raises while building the
        request, and that exception would stop the worker ("Unrecoverable error").
        Broker errors still propagate, so Celery's own reconnection runs as before."""
        handle = super().create_task_handler(*args, **kwargs)
        recoverable = tuple(self.connection_errors) + tuple(self.channel_errors)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except recoverable:
                raise
            except Exception as exc:
                recorded = dead_letter_message(
                    message,
                    f"malformed task message ({type(exc).__name__}): the body must be "
                    "[args, kwargs, embed] as Celery sends it",
                )
                if not message.acknowledged:
                    _settle(message, recorded, self.connection_errors)
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        recorded = dead_letter_message(
            message, f"message body cannot be decoded: {type(exc).__name__}"
        )
        _settle(message, recorded, self.connection_errors, ack=True)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            content_type = getattr(message, "content_type", None)
            problem = (
                f"message refused ({type(exc).__name__}): content type {content_type!r}; "
                "leadpipe accepts application/json only"
            )
        else:  # InvalidTaskError: Celery's words name the header or part at fault
            problem = f"malformed task message: {str(exc)[:160]}"
        _settle(message, dead_letter_message(message, problem), self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None) or {}
        name = headers.get("task") if isinstance(headers, dict) else None
        recorded = dead_letter_message(
            message, f"unknown task {str(name)[:80]!r}; send leads as task {INGEST_TASK!r}"
        )
        _settle(message, recorded, self.connection_errors)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        recorded = dead_letter_message(message, "message is not a Celery task message")
        _settle(message, recorded, self.connection_errors)
