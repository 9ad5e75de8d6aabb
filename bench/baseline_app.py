"""What users would pick instead of leadpipe: bare Celery apps for the comparisons.

- `baseline.a`, `baseline.b`, `baseline.c`: three no-op tasks run as a chain, with the
  pipeline's broker settings and queues (its workers use the pipeline's pools), so the
  chain's rate is Celery's own cost of moving one lead through three messages.
- `naive.deliver`: the delivery task a plain-Celery user would write, POSTing the lead
  with `requests` (one shared Session per process); the bench runs it on the default
  prefork pool (concurrency = cores), with the same broker settings.

The broker URL comes from `BENCH_BROKER_URL` (set by the bench for its worker
processes); importing this module does nothing else.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from celery import Celery

# Nothing from `tasks` is imported: its worker signals would run in these workers too.
#: The pipeline's queue names and broker timings (tasks/queues.py, tasks/celery.py);
#: the smoke test checks they still match.
INGEST_QUEUE, ENRICH_QUEUE, DELIVER_QUEUE = "leads.ingest", "leads.enrich", "leads.deliver"
VISIBILITY_TIMEOUT_SECONDS = 60
UNACKED_RESTORE_INTERVAL_SECONDS = 10

#: The chain's three steps, each on the queue of the pipeline stage it stands for.
CHAIN_STEPS = (
    ("baseline.a", INGEST_QUEUE),
    ("baseline.b", ENRICH_QUEUE),
    ("baseline.c", DELIVER_QUEUE),
)
NAIVE_TASK = "naive.deliver"
NAIVE_QUEUE = "naive"
#: The naive task's POST timeout, seconds (the pipeline's default).
NAIVE_TIMEOUT_SECONDS = 10.0

#: The pipeline's broker and message settings (tasks/celery.py), nothing of its code.
PIPELINE_LIKE_CONFIG: dict[str, Any] = {
    "broker_transport_options": {
        "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
        "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_SECONDS,
        "unacked_restore_throttle": 1,
    },
    "broker_connection_retry_on_startup": True,
    "task_serializer": "json",
    "accept_content": ["json"],
    "result_serializer": "json",
    "task_ignore_result": True,
    "result_backend": None,
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 4,
    "worker_send_task_events": False,
    "task_send_sent_event": False,
}


def make_app(broker_url: str | None) -> Celery:
    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(PIPELINE_LIKE_CONFIG)
    app.conf.task_routes = {name: {"queue": queue} for name, queue in CHAIN_STEPS}
    return app


app = make_app(os.environ.get("BENCH_BROKER_URL"))


@app.task(name="baseline.a")
def step_a() -> None:
    """No-op."""


@app.task(name="baseline.b")
def step_b() -> None:
    """No-op."""


@app.task(name="baseline.c")
def step_c() -> None:
    """No-op."""


_session: requests.Session | None = None


@app.task(name=NAIVE_TASK)
def naive_deliver(url: str, body: dict[str, Any], auth: list[str]) -> int:
    """POST one lead the plain way: a shared Session per process, no pool sizing."""
    global _session
    if _session is None:
        _session = requests.Session()
    response = _session.post(url, json=body, auth=(auth[0], auth[1]), timeout=NAIVE_TIMEOUT_SECONDS)
    response.raise_for_status()
    return response.status_code
