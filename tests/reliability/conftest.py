"""The reliability harness: a fresh stack per test, every process it starts stopped
(process groups killed) in teardown, and the ledger each case ends with.

The ledger is counted in the fake myKaarma's own record of every request, not in
what leadpipe says about itself: every lead reached exactly one terminal state, no
lead id was stored twice (a 2xx, or an answer dropped after storing), nothing is
missing, and Redis's indexes and counters agree with the records.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.transport.redis import Channel as KombuRedisChannel

from leadpipe.fake_mykaarma import FakeMyKaarma
from leadpipe.runner import WorkerProcess, WorkerSpec, default_specs
from store.embedded import free_port, start_redis_server
from tasks.fetch import held_messages
from tests.conftest import flush_owned_database
from tests.stack import (
    ALL_QUEUES,
    BEHAVIOURS,
    PASSWORD,
    ROUTING,
    TERMINAL,
    USERNAME,
    Stack,
    make_env,
)

#: Poll interval of every wait in this suite, seconds.
POLL_SECONDS = 0.02
#: How long teardown lets the workers shut down warm before killing them, seconds.
STOP_SECONDS = 10.0


def text(value: Any) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, what: str, every: float = POLL_SECONDS
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Ledger:
    """What the fake and Redis say about a set of leads once all are terminal."""

    states: dict[str, str]
    reasons: dict[str, str | None]
    stored: Counter[str]
    created: Counter[str]
    posts: Counter[str]
    stored_twice: set[str] = field(default_factory=set)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)

    def summary(self) -> str:
        dead = Counter(r for i, r in self.reasons.items() if self.states[i] == "dead")
        return (
            f"{len(self.states)} leads: {self.count('delivered')} delivered, "
            f"{self.count('dead')} dead {dict(dead)}, {self.count('duplicate')} duplicate; "
            f"{sum(self.posts.values())} POSTs; {len(self.stored_twice)} stored twice "
            "(created once)"
        )


class ReliabilityStack(Stack):
    """The shared test Stack, plus worker options (log level, env) and the ledger."""

    def __post_init__(self) -> None:
        super().__post_init__()
        #: Every lead id a ledger has checked on this stack.
        self.accounted: set[str] = set()

    def start_worker(
        self,
        name: str = "w1",
        *,
        queues: Iterable[str] = ALL_QUEUES,
        pool: str = "threads",
        concurrency: int = 8,
        env: Mapping[str, str] | None = None,
        loglevel: str = "INFO",
        wait: bool = True,
    ) -> WorkerProcess:
        spec = WorkerSpec(
            f"{name}-{uuid.uuid4().hex[:6]}", tuple(queues), pool, concurrency, loglevel
        )
        worker = WorkerProcess(spec, {**self.env, **(env or {})}, self.workdir / f"{name}.log")
        self.workers.append(worker)
        worker.start()
        if wait:
            worker.wait_ready()
        return worker

    def start_host(
        self,
        name: str,
        *,
        deliver_threads: int = 8,
        env: Mapping[str, str] | None = None,
        loglevel: str = "INFO",
        only: Iterable[str] | None = None,
    ) -> list[WorkerProcess]:
        """The processes `leadpipe worker` runs on one host (`default_specs`): one for
        the short CPU-bound queues, one with a threads pool for delivery, one for
        notifications. `only` names a subset (e.g. `("io",)`), so a case can start the
        delivery process once the leads are validated, whatever the machine's speed."""
        wanted = None if only is None else set(only)
        workers = [
            self.start_worker(
                f"{name}-{spec.name}",
                queues=spec.queues,
                pool=spec.pool,
                concurrency=spec.concurrency,
                env=env,
                loglevel=loglevel,
                wait=False,
            )
            for spec in default_specs(deliver_threads)
            if wanted is None or spec.name in wanted
        ]
        for worker in workers:
            worker.wait_ready()
        return workers

    def kill_all(self) -> None:
        """SIGKILL every worker's process group (teardown must not wait on anything)."""
        for worker in self.workers:
            worker.kill()

    def states(self, lead_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(lead_ids)
        pipe = self.redis.pipeline(transaction=False)
        for lead_id in ids:
            pipe.hget(self.store.keys.lead(lead_id), "state")
        return {i: (s.decode() if s else None) for i, s in zip(ids, pipe.execute(), strict=True)}

    def count_states(self, lead_ids: Iterable[str]) -> Counter[str | None]:
        return Counter(self.states(lead_ids).values())

    def ledger(
        self,
        lead_ids: Iterable[str],
        *,
        timeout: float = 60,
        ambiguous: Iterable[str] = (),
        exact_counters: bool = True,
    ) -> Ledger:
        """Wait until every lead is terminal, then check, in the fake's record and in
        Redis, that each reached exactly one terminal state and none was stored twice.

        `ambiguous`: leads whose POST reached myKaarma but whose answer leadpipe never
        got (a worker killed mid-POST, a timeout after storing, a dropped connection);
        at-least-once delivery must post those again, so they may be *stored* twice,
        but only with the same Idempotency-Key, and myKaarma must *create* them once.
        """
        ids = list(dict.fromkeys(lead_ids))
        self.wait_for(ids, timeout=timeout)
        records = self.fake.requests
        allowed = set(ambiguous)
        stored: Counter[str] = Counter()
        created: Counter[str] = Counter()
        posts: Counter[str] = Counter()
        for rec in records:
            lead = rec["idempotencyKey"] or rec["leadId"] or ""
            posts[lead] += 1
            # The body's leadId and the Idempotency-Key always name the same lead.
            assert rec["leadId"] in (None, lead), rec
            stored[lead] += rec["stored"]
            created[lead] += rec["created"]
        states = self.states(ids)
        reasons = {
            i: (r.decode() if r else None)
            for i, r in zip(
                ids,
                self._hget_all(ids, "reason"),
                strict=True,
            )
        }
        stored_twice: set[str] = set()
        for lead_id in ids:
            state = states[lead_id]
            assert state in TERMINAL, (lead_id, state)
            if state == "delivered":
                assert created[lead_id] == 1, (lead_id, "created", created[lead_id])
                if stored[lead_id] != 1:
                    assert lead_id in allowed, (lead_id, "stored", stored[lead_id])
                    stored_twice.add(lead_id)
            else:
                assert stored[lead_id] == 0, (lead_id, state, "stored", stored[lead_id])
                assert created[lead_id] == 0, (lead_id, state, "created", created[lead_id])
        self.accounted.update(ids)
        unknown = {lead for lead, n in stored.items() if n and lead not in self.accounted}
        assert not unknown, f"myKaarma stored leads nobody sent: {unknown}"
        self._check_indexes(ids, states, exact_counters=exact_counters)
        posts = Counter({i: posts[i] for i in ids if posts[i]})
        stored = Counter({i: stored[i] for i in ids if stored[i]})
        created = Counter({i: created[i] for i in ids if created[i]})
        return Ledger(states, reasons, stored, created, posts, stored_twice)  # type: ignore[arg-type]

    def _hget_all(self, ids: list[str], name: str) -> list[bytes | None]:
        pipe = self.redis.pipeline(transaction=False)
        for lead_id in ids:
            pipe.hget(self.store.keys.lead(lead_id), name)
        return list(pipe.execute())

    def _check_indexes(
        self, ids: list[str], states: Mapping[str, str | None], *, exact_counters: bool
    ) -> None:
        """Nothing left in flight; the dead-letter index and the state counters agree
        with the records (one terminal state each, counted once)."""
        k = self.store.keys
        active, retry, dead = (self.members(key) for key in (k.active, k.retry, k.dead))
        assert not active & set(ids), f"terminal leads still active: {active & set(ids)}"
        assert not retry & set(ids), f"terminal leads still scheduled: {retry & set(ids)}"
        dead_ids = {i for i in ids if states[i] == "dead"}
        assert dead_ids <= dead, f"dead leads missing from the dead letters: {dead_ids - dead}"
        assert not (dead & set(ids)) - dead_ids, "live leads listed as dead letters"
        if exact_counters:
            raw: dict[Any, Any] = dict(self.redis.hgetall(k.state_counts))
            counts = {text(key): int(v) for key, v in raw.items() if int(v)}
            assert counts == self.tally(), counts

    def members(self, key: str) -> set[str]:
        """The members of a sorted set, as text."""
        return {text(m) for m in list(self.redis.zrange(key, 0, -1))}

    def tally(self) -> dict[str, int]:
        """Leads per state, counted over every record in this stack's database."""
        keys = [
            key
            for key in self.redis.scan_iter(match=self.store.keys.lead_pattern, count=1000)
            if not text(key).endswith((":attempts", ":history"))
        ]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "state")
        return dict(Counter(text(s) for s in pipe.execute() if s))


@dataclass
class StackFactory:
    """Builds stacks for one test and tears every one of them down."""

    redis_url: str
    workdir: Path
    stacks: list[ReliabilityStack] = field(default_factory=list)
    fakes: list[FakeMyKaarma] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __call__(
        self,
        *,
        redis_url: str | None = None,
        behaviours: Mapping[str, str] | None = None,
        latency_ms: float = 0,
        fake_password: str = PASSWORD,
        routing: str = ROUTING,
        **env: str,
    ) -> ReliabilityStack:
        url = redis_url or self.redis_url
        n = len(self.stacks)
        workdir = self.workdir / f"stack{n}"
        workdir.mkdir(parents=True, exist_ok=True)
        routing_file = workdir / "routing.toml"
        routing_file.write_text(routing)
        fake = FakeMyKaarma(
            username=USERNAME,
            password=fake_password,
            behaviours=dict(BEHAVIOURS if behaviours is None else behaviours),
            latency_ms=latency_ms,
        )
        self.fakes.append(fake)
        fake.start()
        full_env = make_env(url, fake.url, routing_file, **env)
        stack = ReliabilityStack(url, workdir, fake, full_env)
        self.stacks.append(stack)
        return stack

    def redis_server(
        self, *, password: str | None = None, port: int | None = None, name: str = "redis"
    ) -> tuple[subprocess.Popen[bytes], Path, int]:
        """A private redis-server (append-only) on a free port; never the shared 6379."""
        directory = self.workdir / name
        port = port or free_port()
        proc = start_redis_server(
            directory, port, appendonly=True, password=password, daemonize=False
        )
        assert proc is not None
        self.servers.append(proc)
        return proc, directory, port

    def close(self) -> None:
        """Warm-stop every worker (so a shared broker gets its messages back), then
        SIGKILL every process group, whatever state it is in."""
        workers = [w for stack in self.stacks for w in stack.workers]
        for worker in workers:
            worker.signal(signal.SIGTERM)
            worker.signal(signal.SIGCONT)  # a test may have frozen it (SIGSTOP)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in workers:
            if worker.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for stack in self.stacks:
            stack.kill_all()
        for stack in self.stacks:
            with contextlib.suppress(Exception):
                stack.upstream.close()
                stack.redis.close()
        for fake in self.fakes:
            fake.stop()
        for proc in self.servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def _factory(redis_url: str, workdir: Path) -> Iterator[StackFactory]:
    flush_owned_database(redis_url)
    factory = StackFactory(redis_url, workdir)
    try:
        yield factory
    finally:
        factory.close()
        flush_owned_database(redis_url)


@pytest.fixture
def stacks(redis_url: str, tmp_path: Path) -> Iterator[StackFactory]:
    """`stacks(...)` builds a stack on a flushed database (or a given Redis URL)."""
    with _factory(redis_url, tmp_path) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_stacks(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackFactory]:
    """The same, shared by the tests of one module (one worker start for all of them)."""
    with _factory(redis_url, tmp_path_factory.mktemp("module")) as factory:
        yield factory


def seconds(stamp: str) -> float:
    """Epoch seconds of an ISO 8601 time from a record."""
    return datetime.fromisoformat(stamp).timestamp()


def fake_times(fake: FakeMyKaarma) -> dict[str, list[float]]:
    """When the fake saw each lead's POSTs (arrival times, in order)."""
    times: dict[str, list[float]] = {}
    for rec in fake.requests:
        lead = rec["idempotencyKey"] or rec["leadId"] or ""
        times.setdefault(lead, []).append(rec["time"])
    return times


def reserved_lead_ids(client: redis.Redis, routing_key: str) -> set[str]:
    """Lead ids of the messages workers hold taken-but-unacknowledged from queue
    `routing_key` (reliable fetch's held lists, tasks/fetch.py). An ingest message's
    id is the lead id; later stages carry the lead id as their argument."""
    ids: set[str] = set()
    for source, raw in held_messages(client):
        if source.split(KombuRedisChannel.sep, 1)[0] != routing_key:
            continue
        envelope = json.loads(raw)
        if routing_key == "leads.ingest":
            ids.add(str(envelope["headers"]["id"]))
        else:
            ids.add(str(json.loads(base64.b64decode(envelope["body"]))[0][0]))
    return ids
