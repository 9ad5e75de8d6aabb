"""The main flow with RabbitMQ as the broker (issue 6, case 9): LEADPIPE_BROKER_URL is
amqp://, the upstream bare Celery client sends through RabbitMQ too, and Redis holds
only the pipeline's state.

RabbitMQ's queues are shared by whoever uses this broker; nothing is purged here: the
leads carry unique ids, and the ledger checks exactly those."""

from __future__ import annotations

import socket

import pytest
from celery import Celery

from tests.reliability.conftest import StackFactory
from tests.stack import valid_payload

pytestmark = pytest.mark.reliability

BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def _rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbitmq_answers(), reason="nothing answers on 127.0.0.1:5672")
def test_the_main_flow_passes_with_rabbitmq_as_the_broker(stacks: StackFactory) -> None:
    stack = stacks(LEADPIPE_BROKER_URL=BROKER, LEADPIPE_LEASE_SECONDS="5")
    stack.upstream.close()
    stack.upstream = Celery("upstream", broker=BROKER)
    stack.upstream.conf.update(broker_connection_retry_on_startup=True)
    host = stack.start_host("rabbit")
    assert all("amqp://guest:**@127.0.0.1:5672//" in w.log_text() for w in host)
    # Given valid, invalid, rejected and flaky leads sent through RabbitMQ
    valid = [stack.send(valid_payload(), partner="acme") for _ in range(10)]
    rejected = [stack.send(valid_payload(), partner="reject") for _ in range(3)]
    flaky = [stack.send(valid_payload(), partner="flaky") for _ in range(3)]
    invalid = [stack.send({"lead": {"firstName": "x"}}, partner="acme") for _ in range(2)]
    # Then each ends where it should, once
    ledger = stack.ledger([*valid, *rejected, *flaky, *invalid], timeout=60)
    for lead_id in valid:
        assert ledger.states[lead_id] == "delivered"
    for lead_id in rejected:
        assert (ledger.states[lead_id], ledger.reasons[lead_id]) == ("dead", "rejected")
    for lead_id in invalid:
        assert (ledger.states[lead_id], ledger.reasons[lead_id]) == ("dead", "invalid")
    for lead_id in flaky:
        record = stack.record(lead_id)
        assert record is not None
        assert [a["status"] for a in record["attempts"]] == [503, 503, 200]
    # ... and no message went through Redis: it holds the state only
    assert not stack.redis.exists("leads.ingest", "leads.enrich", "leads.deliver", "unacked")
    stack.upstream.close()
    print(f"\nRabbitMQ: {ledger.summary()}")
