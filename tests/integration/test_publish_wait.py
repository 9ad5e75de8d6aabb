"""A careful sender's publish waits for a replica (`publish_wait_replicas`, README "High
availability"), and keeps waiting after kombu retries a publish no replica confirmed.

The session's Redis has no replica, so `WAIT 1` always answers 0: every publish is one
no replica confirmed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.messaging import Producer

from tasks.transport import LeadRedisTransport

pytestmark = pytest.mark.integration

TRANSPORT = "tasks.transport:LeadRedisTransport"
OPTIONS = {"publish_wait_replicas": 1, "publish_wait_ms": 10}


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    name = f"t-wait-{uuid.uuid4().hex[:8]}"
    yield name
    redis.Redis.from_url(redis_url).delete(name)


def _publish(connection: Connection, queue_name: str, max_retries: int) -> None:
    queue = Queue(queue_name, Exchange(queue_name, "direct"), routing_key=queue_name)
    producer = Producer(connection)
    producer.publish(
        {"n": 1},
        exchange=queue.exchange,
        routing_key=queue_name,
        declare=[queue],
        retry=True,
        retry_policy={"max_retries": max_retries, "interval_start": 0, "interval_step": 0},
    )


def test_a_publish_no_replica_confirmed_raises_and_the_retry_still_waits(
    redis_url: str, queue_name: str
) -> None:
    # Given a careful sender on one broker URL (NotReplicated reaches it as kombu's
    # OperationalError, like any connection error)
    with Connection(redis_url, transport=TRANSPORT, transport_options=OPTIONS) as connection:
        # When no replica confirms its publish, through kombu's retries
        with pytest.raises(OperationalError, match="0 of 1 replica"):
            _publish(connection, queue_name, max_retries=2)
        # Then it is still leadpipe's transport, which waits (kombu's own would not)
        assert connection.transport_cls == TRANSPORT
        assert isinstance(connection.transport, LeadRedisTransport)
        with pytest.raises(OperationalError, match="0 of 1 replica"):
            _publish(connection, queue_name, max_retries=0)
    # Each try reached the primary (the first publish was retried: a duplicate under the
    # same id, which the pipeline records once)
    assert redis.Redis.from_url(redis_url).llen(queue_name) >= 3


def test_failover_alternatives_are_refused_with_the_wait(redis_url: str, queue_name: str) -> None:
    """kombu switches to the next `;` URL on a connection error, and with it to the
    transport that URL's scheme names, which never waits: refused before any publish."""
    with (
        Connection(
            f"{redis_url};{redis_url}", transport=TRANSPORT, transport_options=OPTIONS
        ) as connection,
        pytest.raises(ValueError, match="single broker URL"),
    ):
        _publish(connection, queue_name, max_retries=0)
    assert redis.Redis.from_url(redis_url).llen(queue_name) == 0
