"""A worker-side Request that never shows a lead's payload.

Flower and the worker's events show `argsrepr`/`kwargsrepr`, which the *sender* sets;
an upstream system that knows nothing of us sends the customer's name and email
there. Remote control (`inspect active`, which Flower calls) shows the raw args.
This Request masks all of them (`tasks.masking`: the payload never, the partner
always), so no PII reaches events, Flower or logs.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import InvalidTaskError
from celery.worker.request import Request

from tasks.masking import MASKED_ARGS, MASKED_KWARGS, masked_args, masked_kwargs

__all__ = ["MASKED_ARGS", "MASKED_KWARGS", "MaskPoolArguments", "MaskedRequest"]


class MaskedRequest(Request):
    """Request whose arguments are masked wherever the worker shows them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Celery checks this shape only when the task runs, after the message has
        # left the consumer, and then drops the message; refused here, it becomes a
        # dead letter under its id (LeadConsumer.on_invalid_task).
        if not isinstance(self._args, list | tuple) or not isinstance(self._kwargs, dict):
            raise InvalidTaskError("the body must be [args (a list), kwargs (an object), embed]")
        if "self" in self._kwargs:  # Celery's call wrapper takes `self` itself
            raise InvalidTaskError("a keyword argument named 'self' cannot be passed")
        self._argsrepr = masked_args(self._args)
        self._kwargsrepr = masked_kwargs(self._kwargs)
        # What the sender put in the headers travels on to the task's trace, where
        # Celery logs it with each result (`extra={"data": ...}`, for log handlers
        # that print structured records).
        self._request_dict["argsrepr"] = self._argsrepr
        self._request_dict["kwargsrepr"] = self._kwargsrepr

    def info(self, safe: bool = False) -> dict[str, Any]:
        details: dict[str, Any] = super().info(safe=True)
        details["args"] = self._argsrepr
        details["kwargs"] = self._kwargsrepr
        return details


class MaskPoolArguments(logging.Filter):
    """Masks the arguments of Celery's "TaskPool: Apply" line.

    At DEBUG, Celery's pool logs every task it starts with its raw arguments: the
    message headers and body, which for `leads.ingest` is the customer's payload. The
    line is kept (it shows the pool at work); its arguments are not."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("TaskPool: Apply"):
            target = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "TaskPool: Apply %s (arguments masked)", (target,)
        return True


#: Celery's pool logger ("celery.pool"); the filter is installed when a worker imports
#: `tasks`, before any task runs.
POOL_LOGGER = "celery.pool"
logging.getLogger(POOL_LOGGER).addFilter(MaskPoolArguments())
