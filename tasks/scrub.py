"""Take a forgotten lead's messages out of a Redis broker (CONTRACT section 7).

An ingest message carries the payload as the sender sent it: name, email, VIN,
plate. While it waits in a queue, sits in a consumer's held list (taken by a worker
through reliable fetch, not yet acknowledged: tasks/fetch.py), or in kombu's
`unacked` hash (left by a worker of an earlier release), `leadpipe forget` must
remove it, or the lead would be
ingested again after it was erased (the tombstone refuses that too) and the data
would stay in Redis. Later messages (enrich, deliver) carry the lead id only.

A message matches when its id is one of the lead ids, or its payload's email has the
digest being forgotten. Entries that are not kombu messages are left alone.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline.privacy import payload_email
from tasks import fetch
from tasks.depths import queue_keys
from tasks.queues import ALL_QUEUES

#: kombu's Redis transport: the hash of taken-but-unacknowledged messages and its index.
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
#: Entries read per LRANGE/HSCAN call: bounds one command's reply.
SCAN_CHUNK = 1000


@dataclass
class ScrubResult:
    """What a scrub found (lead ids) and removed (message count)."""

    lead_ids: set[str] = field(default_factory=set)
    removed: int = 0


def _all_queue_keys() -> list[str]:
    """The Redis lists of every queue we consume, one per kombu priority step."""
    return [key for queue in ALL_QUEUES for key in queue_keys(queue)]


def _message_of(raw: bytes | str, *, unacked: bool = False) -> dict[str, Any] | None:
    """The kombu message in a queue entry (an object), or in an unacked entry (an
    array: message, exchange, routing key); None for anything else."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if unacked:
        entry = entry[0] if isinstance(entry, list) and entry else None
    return entry if isinstance(entry, dict) else None


def _lead_id(message: dict[str, Any]) -> str | None:
    headers = message.get("headers")
    lead_id = headers.get("id") if isinstance(headers, dict) else None
    if lead_id is None:
        properties = message.get("properties")
        if isinstance(properties, dict):
            lead_id = properties.get("correlation_id")
    return lead_id if isinstance(lead_id, str) else None


def _email(message: dict[str, Any]) -> str | None:
    """The payload email of a task message, if its body can be read."""
    body = message.get("body")
    if not isinstance(body, str):
        return None
    try:
        properties = message.get("properties") or {}
        if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8")
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(decoded, list) or len(decoded) < 2:
        return None
    args, kwargs = decoded[0], decoded[1]
    if isinstance(args, list) and args:
        return payload_email(args[0])
    if isinstance(kwargs, dict):
        return payload_email(kwargs.get("payload"))
    return None


class Scrubber:
    """Removes matching messages from a Redis broker's queues and unacked hash."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lead_ids: set[str],
        email_matches: Callable[[str], bool] | None = None,
    ) -> None:
        self.client = client
        self.lead_ids = lead_ids
        self.email_matches = email_matches

    def _match(self, message: dict[str, Any]) -> str | None:
        lead_id = _lead_id(message)
        if lead_id is None:
            return None
        if lead_id in self.lead_ids:
            return lead_id
        if self.email_matches is not None:
            email = _email(message)
            if email is not None and self.email_matches(email):
                return lead_id
        return None

    def _list_entries(self, key: str) -> Iterator[Any]:
        start = 0
        while True:
            chunk = self.client.lrange(key, start, start + SCAN_CHUNK - 1)
            yield from chunk
            if len(chunk) < SCAN_CHUNK:
                return
            start += SCAN_CHUNK

    def _held_keys(self) -> list[str]:
        """Every consumer's held lists (reliable fetch): a message a worker has taken
        but not acknowledged. Removing it there is safe: the worker's ack then removes
        nothing, and the lead's tombstone refuses the record its ingest would write."""
        keys = []
        for consumer in self.client.smembers(fetch.REGISTRY_KEY):
            name = consumer.decode() if isinstance(consumer, bytes) else str(consumer)
            for source in self.client.smembers(fetch.sources_key(name)):
                queue = source.decode() if isinstance(source, bytes) else str(source)
                keys.append(fetch.held_key(name, queue))
        return keys

    def run(self, *, dry_run: bool = False) -> ScrubResult:
        """Find (and unless `dry_run`, remove) the matching messages."""
        found = ScrubResult()
        for key in [*_all_queue_keys(), *self._held_keys()]:
            doomed: list[Any] = []
            for raw in self._list_entries(key):
                message = _message_of(raw)
                lead_id = self._match(message) if message else None
                if lead_id is not None:
                    found.lead_ids.add(lead_id)
                    doomed.append(raw)
            for raw in doomed if not dry_run else []:
                found.removed += int(self.client.lrem(key, 1, raw))
        for tag, raw in self.client.hscan_iter(UNACKED, count=SCAN_CHUNK):
            message = _message_of(raw, unacked=True)
            lead_id = self._match(message) if message else None
            if lead_id is None:
                continue
            found.lead_ids.add(lead_id)
            if not dry_run:
                pipe = self.client.pipeline(transaction=False)
                pipe.hdel(UNACKED, tag)
                pipe.zrem(UNACKED_INDEX, tag)
                found.removed += int(pipe.execute()[0])
        return found


def redis_broker_scrub(client: redis.Redis) -> Callable[[set[str], Any, bool], set[str]]:
    """The `store.erasure.BrokerScrub` of a Redis broker reached through `client`."""

    def scrub(lead_ids: set[str], email_matches: Any, dry_run: bool) -> set[str]:
        scrubber = Scrubber(client, lead_ids=lead_ids, email_matches=email_matches)
        return scrubber.run(dry_run=dry_run).lead_ids

    return scrub
