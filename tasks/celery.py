"""The Celery app and its configuration, nothing else (Celery's next-steps layout).

Configuration is added lazily (`add_defaults` with a callable), so importing `tasks`
never starts the embedded Redis or reads the environment until a broker is needed.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery

from tasks.queues import (
    ALL_QUEUES,
    DEFAULT_QUEUE,
    DELIVER_QUEUE,
    DELIVER_TASK,
    ENRICH_QUEUE,
    ENRICH_TASK,
    INGEST_QUEUE,
    INGEST_TASK,
    NOTIFY_QUEUE,
    NOTIFY_TASK,
    declare,
)

#: On Redis, a message a worker takes is held in that worker's own list (reliable
#: fetch, tasks/fetch.py) and goes back to its queue once the worker's heartbeat has
#: stopped for 15 s, whatever the task's duration; no visibility timeout redelivers a
#: slow task. The two settings below now apply only to messages left in kombu's own
#: `unacked` hash by a worker of an earlier release (restored after 60 s).
VISIBILITY_TIMEOUT_SECONDS = 60
#: How often kombu's periodic check runs (here also the heartbeat and reaper's).
UNACKED_RESTORE_INTERVAL_SECONDS = 10

#: AMQP heartbeat, seconds: RabbitMQ drops a worker that missed two, requeueing what
#: it held (Celery's default, 120 s, would take 4 minutes; the contract allows 2).
AMQP_HEARTBEAT_SECONDS = 10

#: kombu's Redis transport with reliable fetch, and unreadable entries counted.
REDIS_TRANSPORT = "tasks.transport:LeadRedisTransport"
#: The same over kombu's Sentinel transport, for `redis+sentinel://` URLs.
SENTINEL_TRANSPORT = "tasks.sentinel_transport:LeadSentinelTransport"

# `include` is imported before the worker blueprint is built and before `worker_init`,
# so the loops step and the start-up check register even with `celery -A tasks.celery`.
app = Celery("leadpipe", include=["tasks.lead_tasks", "tasks.notify_tasks", "tasks.loops"])


def _configuration() -> dict[str, Any]:
    from config import load_settings
    from config.urls import Broker, broker_kind
    from leadpipe.exit_codes import exit_code_for
    from pipeline.errors import ConfigError
    from store.connection import broker_url
    from store.sentinel import is_sentinel
    from store.sentinel import parse as parse_sentinel

    try:
        settings = load_settings()
        broker = broker_url(settings)
    except ConfigError as exc:
        # A bare `celery -A tasks worker` (or flower) reads the settings here, first:
        # one line naming the variable and exit 2, as every leadpipe command does.
        sys.stderr.write(f"leadpipe: {exc}\n")
        raise SystemExit(exit_code_for(exc)) from None
    options: dict[str, Any] = {
        "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
        "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_SECONDS,
        "unacked_restore_throttle": 1,
    }
    transport = REDIS_TRANSPORT if broker_kind(broker) is Broker.REDIS else None
    if is_sentinel(broker):  # kombu's sentinel transport, reliable fetch on top
        broker, sentinel_options = parse_sentinel(broker).lead_transport_broker()
        transport = SENTINEL_TRANSPORT
        options.update(sentinel_options)
    amqp: dict[str, Any] = {}
    queue_arguments: dict[str, Any] | None = None
    if broker_kind(broker) is Broker.AMQP:
        # A silently dead host (power cut, frozen VM) is noticed by its missing
        # heartbeats, and its unacknowledged messages go to a live worker.
        amqp["broker_heartbeat"] = AMQP_HEARTBEAT_SECONDS
        options["confirm_publish"] = True  # a next-stage publish waits for the broker
        if settings.amqp_queue_type == "quorum":  # replicated queues (Celery 5.5+)
            queue_arguments = {"x-queue-type": "quorum"}
            amqp["task_default_queue_type"] = "quorum"
            amqp["task_create_missing_queue_type"] = "quorum"
            amqp["worker_detect_quorum_queues"] = True  # no global QoS on quorum queues
    return {
        **amqp,
        "broker_url": broker,
        # kombu's Redis transport with reliable fetch (no message only in memory).
        "broker_transport": transport,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # ride out a broker restart, never give up
        "broker_pool_limit": settings.deliver_concurrency + 8,
        # JSON only, both ways: a pickled message is refused before it is decoded.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        # The lead record in Redis is the result; upstream needs only the message id.
        "task_ignore_result": True,
        "result_backend": None,
        # A message is acknowledged only once its stage has been written to the record;
        # a worker that dies mid-task leaves it for another worker.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 4,
        "task_queues": [declare(name, queue_arguments) for name in ALL_QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {
            INGEST_TASK: {"queue": INGEST_QUEUE},
            ENRICH_TASK: {"queue": ENRICH_QUEUE},
            DELIVER_TASK: {"queue": DELIVER_QUEUE},
            NOTIFY_TASK: {"queue": NOTIFY_QUEUE},
        },
        "worker_consumer": "tasks.consumer:LeadConsumer",
        "worker_send_task_events": False,  # Flower turns events on when it watches
        "task_send_sent_event": False,
        "broker_connection_timeout": 5,
    }


app.add_defaults(_configuration)
