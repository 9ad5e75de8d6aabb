"""`leadpipe demo`: the whole pipeline on one machine, with nothing configured.

What runs: Redis (`LEADPIPE_REDIS_URL`, else the embedded one under `LEADPIPE_HOME`,
stopped at the end only if the demo started it), the fake myKaarma in this process
(one dealer that rejects, one that fails twice per lead), a routing file in a temp
directory, and the real worker processes of `leadpipe worker`. The sample leads are
sent as an upstream system sends them, with a bare Celery `send_task`; the demo then
watches their records until each reaches a terminal state.

Fresh key space: on the embedded Redis the demo works in a database of its own
(`DEMO_DATABASE`), emptied when it starts, so re-running always works and the demo
never touches pipeline data. On a `LEADPIPE_REDIS_URL` it refuses to start when other
workers, queued messages or unfinished leads are there: its workers (which deliver to
the fake) would otherwise take them over. Its transaction ids are new on every run.
"""

from __future__ import annotations

import base64
import secrets
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from config import Settings
from leadpipe.demo_samples import (
    BEHAVIOURS,
    OUTAGE_DEALER,
    WEBHOOK_SECRET_ENV,
    DemoReport,
    Tracked,
    routing,
    samples,
)
from leadpipe.fake_mykaarma import FakeMyKaarma
from leadpipe.fake_partner import FakePartner
from leadpipe.runner import WorkerProcess, default_specs
from pipeline.breaker import BreakerState
from pipeline.states import LeadState
from store.embedded import embedded_redis_running, ensure_embedded_redis, stop_embedded_redis
from store.records import LeadStore
from store.views import lead_view
from tasks.depths import redis_queue_depths
from tasks.fetch import held_count
from tasks.queues import INGEST_QUEUE, INGEST_TASK

#: Database of the embedded Redis that belongs to the demo (emptied at each start).
DEMO_DATABASE = 12
#: How long the sample leads may take to settle once sent, seconds.
SETTLE_TIMEOUT_SECONDS = 40.0
#: How long a worker may take to start, seconds.
WORKER_READY_TIMEOUT_SECONDS = 30.0
#: How long a worker may take to finish its tasks at the end, seconds.
WORKER_STOP_TIMEOUT_SECONDS = 15.0
#: How often the records are read while the leads move, seconds.
POLL_SECONDS = 0.1
#: Delivery threads of the demo's worker: eight leads need no more.
DELIVER_THREADS = 8
#: How long acme's webhook events may take to arrive once its leads settled, seconds.
WEBHOOK_TIMEOUT_SECONDS = 15.0
#: Wait for `control.ping` answers from other workers on a shared Redis, seconds.
PING_TIMEOUT_SECONDS = 1.0

USERNAME = "demo-leadpipe"
#: Fast retries so the flaky dealer's lead settles in about a second.
WORKER_SETTINGS = {
    "LEADPIPE_RETRY_MAX_ATTEMPTS": "5",
    "LEADPIPE_RETRY_BASE_SECONDS": "0.2",
    "LEADPIPE_RETRY_MAX_DELAY_SECONDS": "1",
    "LEADPIPE_HTTP_TIMEOUT_SECONDS": "5",
    "LEADPIPE_LEASE_SECONDS": "30",
    "LEADPIPE_DELIVER_CONCURRENCY": str(DELIVER_THREADS),
    # The outage dealer's breaker opens after three 503s in a row (the flaky dealer
    # fails only twice per lead) and probes after half a second.
    "LEADPIPE_BREAKER_FAILURES": "3",
    "LEADPIPE_BREAKER_COOLDOWN_SECONDS": "0.5",
    "LEADPIPE_BROKER_URL": "",  # blank means unset: the demo's broker is its Redis
}


class DemoError(RuntimeError):
    """The demo cannot run here; the message says why and what to do."""


#: The demo tells its caller what happens: (event, detail).
Notify = Callable[[str, str], None]


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl+C while cleaning up must not leave a worker or Redis behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class DemoStack:
    """Redis, the fake myKaarma and the workers, started in order, stopped in reverse."""

    settings: Settings
    workdir: Path
    notify: Notify
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[WorkerProcess] = field(default_factory=list)
    fake: FakeMyKaarma | None = None
    partner: FakePartner | None = None
    url: str = ""
    _started_redis: bool = False
    _clients: list[Any] = field(default_factory=list)

    def __enter__(self) -> DemoStack:
        try:
            self._redis()
            self._fake()
            self._partner()
            self._workers()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redis(self) -> None:
        if self.settings.redis_url:
            self.url = self.settings.redis_url
            self.notify("redis", f"LEADPIPE_REDIS_URL {maybe_sanitize_url(self.url)}")
        else:
            home = self.settings.home
            self._started_redis = not embedded_redis_running(home)
            base = ensure_embedded_redis(home).rsplit("/", 1)[0]
            self.url = f"{base}/{DEMO_DATABASE}"
            how = "started by the demo" if self._started_redis else "already running"
            self.notify(
                "redis",
                f"embedded under {home} ({how}), database {DEMO_DATABASE}: "
                f"{maybe_sanitize_url(self.url)}",
            )
        self.redis = redis.Redis.from_url(self.url, socket_timeout=10)
        self._clients.append(self.redis)
        self.store = LeadStore(self.redis)
        self.upstream = Celery("upstream", broker=self.url)
        self.upstream.conf.update(broker_connection_retry_on_startup=True)
        self._clients.append(self.upstream)
        if self.settings.redis_url:
            self._check_shared_redis()
        else:
            self.redis.flushdb()  # the demo's own database: a fresh key space each run

    def _check_shared_redis(self) -> None:
        keys = self.store.keys
        waiting = sum(redis_queue_depths(self.redis).values())
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.active)
        pipe.zcard(keys.retry)
        pipe.hlen("unacked")
        active, retries, unacked = pipe.execute()
        unacked += held_count(self.redis)
        others = self.upstream.control.ping(timeout=PING_TIMEOUT_SECONDS)
        problems = [
            f"{n} {what}"
            for n, what in (
                (len(others), "worker(s) answering"),
                (waiting, "queued message(s)"),
                (unacked, "unacknowledged message(s)"),
                (active, "unfinished lead(s)"),
                (retries, "scheduled retry(ies)"),
            )
            if n
        ]
        if problems:
            raise DemoError(
                f"LEADPIPE_REDIS_URL is in use ({', '.join(problems)}); the demo's workers "
                "deliver to a fake myKaarma and would take that work over. Point "
                "LEADPIPE_REDIS_URL at an empty Redis, or unset it to use the embedded one."
            )

    def _fake(self) -> None:
        self.password = secrets.token_urlsafe(12)
        self.fake = FakeMyKaarma(
            username=USERNAME, password=self.password, behaviours=dict(BEHAVIOURS)
        ).start()
        self.notify("fake", f"fake myKaarma on {self.fake.url} ({BEHAVIOURS})")

    def _partner(self) -> None:
        """acme's webhook receiver: it verifies every signature with the
        `standardwebhooks` package, and answers 503 to each event's first try so the
        demo shows a retry under the same webhook-id."""
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.partner = FakePartner(self.webhook_secret, fail_first=1).start()
        self.notify("partner", f"acme's webhook receiver on {self.partner.url}")

    def _workers(self) -> None:
        assert self.fake is not None and self.partner is not None
        routing_file = self.workdir / "routing.toml"
        routing_file.write_text(routing(self.partner.url))
        env = {
            **WORKER_SETTINGS,
            WEBHOOK_SECRET_ENV: self.webhook_secret,
            "LEADPIPE_REDIS_URL": self.url,
            "MYKAARMA_BASE_URL": self.fake.url,
            "MYKAARMA_USERNAME": USERNAME,
            "MYKAARMA_PASSWORD": self.password,
            "LEADPIPE_ROUTING_FILE": str(routing_file),
        }
        for spec in default_specs(DELIVER_THREADS):
            spec = replace(spec, name=f"demo-{spec.name}-{self.run}")
            logfile = self.workdir / f"{spec.name}.log"
            self.workers.append(WorkerProcess(spec, env, logfile).start())
        for worker in self.workers:
            worker.wait_ready(WORKER_READY_TIMEOUT_SECONDS)
        listed = ", ".join(f"{w.spec.name} (pid {w.pid})" for w in self.workers)
        self.notify("workers", f"workers ready: {listed}")

    def worker_logs(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {w.spec.name} ---\n" + "\n".join(w.log_text().splitlines()[-lines:])
            for w in self.workers
        )

    def close(self) -> None:
        """Stop everything this demo started, whatever state it is in."""
        with _signals_ignored():
            for worker in self.workers:
                worker.signal(signal.SIGTERM)  # all at once: they shut down in parallel
            for worker in self.workers:
                worker.stop(timeout=WORKER_STOP_TIMEOUT_SECONDS)
            if self.workers:
                self.notify("stopped", "workers stopped")
            if self.fake is not None:
                self.fake.stop()
            if self.partner is not None:
                self.partner.stop()
            for client in self._clients:
                client.close()
            self._clients.clear()
            if self._started_redis and stop_embedded_redis(self.settings.home):
                self.notify("stopped", "embedded Redis stopped (the demo had started it)")

    # -- the leads ------------------------------------------------------------------

    def send(self, tracked: Tracked) -> None:
        """Send one lead exactly as an upstream system does: a bare Celery send_task."""
        result = self.upstream.send_task(
            INGEST_TASK,
            args=[tracked.sample.payload],
            kwargs={"partner": tracked.sample.partner},
            queue=INGEST_QUEUE,
        )
        tracked.lead_id = str(result.id)

    def refresh(self, leads: list[Tracked]) -> list[Tracked]:
        """Read the state of every sent lead; returns those whose state changed."""
        sent = [t for t in leads if t.lead_id is not None and not t.done]
        pipe = self.redis.pipeline(transaction=False)
        for t in sent:
            assert t.lead_id is not None
            pipe.hget(self.store.keys.lead(t.lead_id), "state")
        changed = []
        for t, raw in zip(sent, pipe.execute(), strict=True):
            state = raw.decode() if isinstance(raw, bytes) else raw
            if state != t.state:
                t.state = state
                changed.append(t)
            if t.done and t.lead_id is not None:
                t.record = lead_view(self.store, t.lead_id)
        return changed

    def webhooks(self, leads: list[Tracked], timeout: float) -> list[dict[str, Any]]:
        """The events acme's receiver accepted (verified, answered 2xx), once one has
        arrived for each of acme's settled leads or `timeout` passes."""
        assert self.partner is not None
        wanted = {t.lead_id for t in leads if t.sample.partner == "acme" and t.done}
        deadline = time.monotonic() + timeout
        while True:
            accepted = self.partner.accepted()
            seen = {r.body["data"]["leadId"] for r in accepted}
            if wanted <= seen or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        tries = Counter(r.webhook_id for r in self.partner.received)
        return [
            {
                "type": r.body["type"],
                "leadId": r.body["data"]["leadId"],
                "webhookId": r.webhook_id,
                "tries": tries[r.webhook_id],
                "verified": r.verified,
            }
            for r in accepted
        ]


@dataclass
class OutageScene:
    """The outage dealer's story: its breaker opens (the demo then brings the fake
    dealer back up), a probe succeeds, the breaker closes and the held leads go."""

    stack: DemoStack
    opened: bool = False
    closed: bool = False

    def step(self) -> None:
        if self.closed:
            return
        dealers = self.stack.store.dealers
        b = dealers.breaker(OUTAGE_DEALER)
        if not self.opened and b.state == BreakerState.OPEN:
            self.opened = True
            self.stack.notify(
                "breaker",
                f"{OUTAGE_DEALER}: breaker open after {b.failures} failures in a row; its "
                "leads are held in Redis, not retried. The fake dealer is back up now.",
            )
            assert self.stack.fake is not None
            self.stack.fake.configure(behaviours={**BEHAVIOURS, OUTAGE_DEALER: "ok"})
        elif self.opened and b.state == BreakerState.CLOSED:
            self.closed = True
            self.stack.notify(
                "breaker",
                f"{OUTAGE_DEALER}: a probe got 200, breaker closed; held leads released",
            )


def run_demo(
    settings: Settings,
    workdir: Path,
    notify: Notify,
    on_change: Callable[[list[Tracked], float], None],
) -> DemoReport:
    """Start the stack, send the samples, watch them settle, stop everything."""
    started = time.monotonic()
    with DemoStack(settings, workdir, notify) as stack:
        leads = [Tracked(n, s) for n, s in enumerate(samples(stack.run), start=1)]
        by_key = {t.sample.key: t for t in leads}
        sent_at = time.monotonic()
        for t in leads:
            if t.sample.after is None:
                stack.send(t)
        on_change(leads, time.monotonic() - started)
        deadline = sent_at + SETTLE_TIMEOUT_SECONDS
        outage = OutageScene(stack)
        while not all(t.done for t in leads) and time.monotonic() < deadline:
            outage.step()
            changed = stack.refresh(leads)
            for t in leads:
                first = by_key[t.sample.after] if t.sample.after else None
                if (
                    t.lead_id is None
                    and first is not None
                    and first.state
                    not in (
                        None,
                        LeadState.RECEIVED,
                    )
                ):
                    t.duplicate_of = first.lead_id
                    stack.send(t)
                    changed.append(t)
            if changed:
                on_change(leads, time.monotonic() - started)
            time.sleep(POLL_SECONDS)
        timed_out = not all(t.done for t in leads)
        if timed_out:
            notify("timeout", stack.worker_logs())
        webhooks = stack.webhooks(leads, WEBHOOK_TIMEOUT_SECONDS)
        redis_shown = maybe_sanitize_url(stack.url)
        workers = [{"name": w.spec.name, "pid": w.pid} for w in stack.workers]
    return DemoReport(leads, time.monotonic() - started, redis_shown, timed_out, workers, webhooks)
