"""A worker Consumer that turns unreadable messages into dead letters.

Celery's own handlers log the message body (customer data) and drop the message.
Here a message that cannot be decoded, is not JSON (a pickle is refused before it is
deserialized), or names a task we do not have, becomes a dead `invalid` record under
its message id, so an operator sees it in `leadpipe dlq list`; a message without a
readable id is counted and logged without its body. The worker never stops for one.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from tasks.runtime import runtime

log = logging.getLogger(__name__)

#: Names of Celery's built-in tasks, which a leadpipe worker never runs.
BUILTIN_TASK_PREFIX = "celery."
#: What a usable message id looks like (Celery's uuids, or a sender's own task_id).
_LEAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")


def usable_lead_id(candidate: object) -> bool:
    """A message id that can name a lead: in a Redis key, a header and a log line."""
    return isinstance(candidate, str) and _LEAD_ID.fullmatch(candidate) is not None


def _lead_id(message: Any) -> str | None:
    headers = getattr(message, "headers", None) or {}
    candidate = headers.get("id") if isinstance(headers, dict) else None
    if candidate is None:
        candidate = (getattr(message, "properties", None) or {}).get("correlation_id")
    return candidate if usable_lead_id(candidate) else None


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


def dead_letter_message(message: Any, problem: str) -> None:
    """Record an unusable message as a dead lead, or count it when it has no id."""
    lead_id = _lead_id(message)
    try:
        if lead_id is None:
            runtime().store.count("messages.unreadable")
            log.error("unreadable message without a usable id dropped: %s", problem)
            return
        runtime().lifecycle.unreadable(lead_id, problem, _describe(message))
    except Exception:  # a broken message must never take the consumer down
        log.exception("could not record unreadable message %s", lead_id or "(no id)")


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
                dead_letter_message(
                    message,
                    f"malformed task message ({type(exc).__name__}): the body must be "
                    "[args, kwargs, embed] as Celery sends it",
                )
                if not message.acknowledged:
                    message.reject_log_error(log, self.connection_errors)
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter_message(message, f"message body cannot be decoded: {type(exc).__name__}")
        message.ack()

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            content_type = getattr(message, "content_type", None)
            problem = (
                f"message refused ({type(exc).__name__}): content type {content_type!r}; "
                "leadpipe accepts application/json only"
            )
        else:  # InvalidTaskError: Celery's words name the header or part at fault
            problem = f"malformed task message: {str(exc)[:160]}"
        dead_letter_message(message, problem)
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = getattr(message, "headers", None) or {}
        name = headers.get("task") if isinstance(headers, dict) else None
        dead_letter_message(
            message, f"unknown task {str(name)[:80]!r}; send leads as task 'leads.ingest'"
        )
        message.reject_log_error(log, self.connection_errors)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter_message(message, "message is not a Celery task message")
        message.reject_log_error(log, self.connection_errors)
