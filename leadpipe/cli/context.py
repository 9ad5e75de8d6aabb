"""What the operator commands share: the settings, the store, the Celery app.

`operator_command` builds a `CliContext` from the environment behind the gate
(`leadpipe.cli.gate`: a bad variable exits 2) and turns an unreachable Redis or
broker into one line that says what to check, exit 1. Celery is imported only when
a command sends something, so `status` and `dlq list` stay quick.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config import Settings
from leadpipe.cli.gate import with_settings
from leadpipe.cli.output import fail, safe_url
from leadpipe.exit_codes import exit_code_for
from store.connection import broker_url, redis_client, redis_url
from store.dead_letters import DeadLetters, EnqueueFailed
from store.errors import store_error_kind
from store.notifications import NotificationStore
from store.records import LeadStore

F = TypeVar("F", bound=Callable[..., Any])

#: Reconnect attempts of one Redis command from the CLI before it reports Redis down.
CLI_RECONNECT_ATTEMPTS = 3


@dataclass
class CliContext:
    """The long-lived objects of one command: built lazily, closed at the end."""

    settings: Settings
    _store: LeadStore | None = field(default=None, init=False)

    @property
    def redis_url(self) -> str:
        return redis_url(self.settings)

    @property
    def broker_url(self) -> str:
        return broker_url(self.settings)

    @property
    def store(self) -> LeadStore:
        if self._store is None:
            client = redis_client(self.redis_url)
            # An operator waiting at a prompt wants an answer in seconds, not the
            # worker's fifteen seconds of patience with a restarting Redis.
            client.set_retry(Retry(ExponentialBackoff(cap=0.5, base=0.05), CLI_RECONNECT_ATTEMPTS))
            self._store = LeadStore(client)
        return self._store

    @property
    def notifications(self) -> NotificationStore:
        """Outcome notifications (CONTRACT section 9) over this command's store."""
        return NotificationStore(self.store.redis, self.store.keys)

    @property
    def dead_letters(self) -> DeadLetters:
        """The dead-letter registry over this command's store."""
        return DeadLetters(self.store)

    @property
    def app(self) -> Any:
        """leadpipe's Celery app, configured from the same environment (imported now).

        Taken from `tasks.celery`, the module that holds it: a client needs neither the
        worker's loops nor its start-up checks, which `tasks/__init__` registers."""
        from tasks.celery import app

        return app

    def enqueue_enrich(self, lead_id: str) -> None:
        """Send a lead (by id only) to the `leads.enrich` queue, as the pipeline does."""
        from pipeline.stages import Step
        from tasks.lead_tasks import follow

        follow(Step(lead_id, "enrich"))

    def enqueue_replay(self, lead_id: str) -> None:
        """`enqueue_enrich` for the dead-letter registry: a broker that cannot take the
        message is `EnqueueFailed`, which the registry understands (store/ knows no kombu)."""
        try:
            self.enqueue_enrich(lead_id)
        except BrokerUnavailable as exc:
            raise EnqueueFailed(str(exc)) from exc

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each of leadpipe's queues; a queue whose depth cannot be
        read (broker down, unknown transport, queue not declared) is left out."""
        from tasks.depths import queue_depths

        return queue_depths(self.broker_url)

    def close(self) -> None:
        if self._store is not None:
            self._store.redis.close()


def operator_command(func: F) -> F:
    """Give `func` a `CliContext` as its first argument, behind the settings-and-errors
    gate; report an unreachable Redis or broker as one line that says what to check."""

    @with_settings
    @functools.wraps(func)
    def wrapper(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        context = CliContext(settings)
        try:
            return func(context, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            fail(
                f"cannot reach Redis at {safe_url(context.redis_url)} ({exc}). Is it "
                "running? Check LEADPIPE_REDIS_URL.",
                code=exit_code_for(exc),
            )
        except redis.RedisError as exc:  # an error reply: OOM, READONLY, MISCONF, ...
            kind = store_error_kind(exc)
            fail(
                f"Redis at {safe_url(context.redis_url)} refused the command ({kind}: "
                f"{type(exc).__name__}). What was done so far is kept (each step is atomic); "
                "run the command again once Redis accepts writes.",
                code=exit_code_for(exc),
            )
        except BrokerUnavailable as exc:
            fail(
                f"cannot reach the broker at {safe_url(context.broker_url)} ({exc}). Is "
                "it running? Check LEADPIPE_BROKER_URL (or LEADPIPE_REDIS_URL).",
                code=exit_code_for(exc),
            )
        finally:
            context.close()

    return wrapper  # type: ignore[return-value]
