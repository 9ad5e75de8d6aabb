"""Hand-built broker messages, exactly as kombu's Redis transport stores them.

kombu LPUSHes one JSON envelope per message onto the queue's list: the body
base64-encoded, its content type and encoding, Celery's protocol-2 headers (task
name, id) and the delivery properties. Building it by hand lets a test put on the
queue what no well-behaved Celery client would send.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis

INGEST_QUEUE = "leads.ingest"


def task_body(*args: Any, **kwargs: Any) -> bytes:
    """A Celery protocol-2 body: [args, kwargs, embed]."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return json.dumps([list(args), kwargs, embed]).encode()


def envelope(
    body: bytes,
    *,
    lead_id: str | None = None,
    task: str = "leads.ingest",
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    queue: str = INGEST_QUEUE,
    headers: dict[str, Any] | None = None,
) -> bytes:
    """One kombu envelope as it sits on a Redis list (see `capture` in the tests)."""
    lead_id = lead_id or str(uuid.uuid4())
    all_headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": lead_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": lead_id,
        "parent_id": None,
        "argsrepr": "[...]",
        "kwargsrepr": "{}",
        "origin": "reliability-test",
        "ignore_result": None,
        "stamped_headers": None,
        "stamps": {},
    }
    all_headers.update(headers or {})
    message = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": all_headers,
        "properties": {
            "correlation_id": lead_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message).encode()


def push(client: redis.Redis, raw: bytes, queue: str = INGEST_QUEUE) -> None:
    """Put a raw entry on a queue's list, as kombu's producer would (LPUSH, BRPOP'd)."""
    client.lpush(queue, raw)
