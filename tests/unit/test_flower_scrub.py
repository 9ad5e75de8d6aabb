"""What Flower may show: masked task arguments, scrubbed events, LeadDead messages."""

from __future__ import annotations

import ast
from typing import Any
from urllib.parse import urljoin

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadpipe.flower_broker import LeadRabbitMQ, plain_broker_url
from leadpipe.flower_scrub import UNKNOWN_TASK, scrub_event, scrub_exception, scrub_traceback
from tasks.masking import MASKED_ARGS, MASKED_KWARGS, masked_args, masked_kwargs
from tasks.outcomes import dead_message, report

CANARY = "canary.person@example.com"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def sent_event(**fields: Any) -> dict[str, Any]:
    event = {
        "type": "task-sent",
        "uuid": "4f1c2d3e-aaaa-bbbb-cccc-000000000001",
        "hostname": "gen42@sender-host",
        "timestamp": 1_700_000_000.0,
        "name": "leads.ingest",
        "args": "()",
        "kwargs": "{}",
        "queue": "leads.ingest",
        "retries": 0,
    }
    event.update(fields)
    return event


def test_the_payload_is_masked_and_the_partner_kept() -> None:
    payload = {"partner": "acme", "lead": {"email": CANARY}}
    assert masked_args([payload]) == "('<lead payload masked; partner acme>',)"
    assert masked_args([{"lead": {"email": CANARY}}]) == MASKED_ARGS
    assert masked_kwargs({"partner": "acme", "received_at": "2026-05-01T09:00:00Z"}) == (
        "{'partner': 'acme', 'received_at': '2026-05-01T09:00:00Z'}"
    )
    # an address is not a partner name; keyword names a sender invented are masked too
    assert masked_kwargs({"partner": CANARY, CANARY: 1}) == (
        "{'partner': '<masked>', '<masked>': '<masked>'}"
    )
    assert masked_args("not a list") == MASKED_ARGS
    assert masked_kwargs(None) == MASKED_KWARGS


@given(payload=json_values, kwargs=st.dictionaries(st.text(max_size=10), json_values))
def test_masking_never_shows_a_canary_and_is_idempotent(payload: Any, kwargs: Any) -> None:
    args = [{"lead": {"email": CANARY}, "extra": payload}, CANARY]
    kw = {**kwargs, "email": CANARY, CANARY: payload}
    shown_args, shown_kwargs = masked_args(args), masked_kwargs(kw)
    assert CANARY not in shown_args and CANARY not in shown_kwargs
    assert masked_args(ast.literal_eval(shown_args)) == shown_args
    assert masked_kwargs(ast.literal_eval(shown_kwargs)) == shown_kwargs


@given(args=st.text(max_size=200), kwargs=st.text(max_size=200))
def test_a_task_sent_event_with_any_argument_text_shows_no_canary(args: str, kwargs: str) -> None:
    event = sent_event(args=f"[{{'email': {CANARY!r}}}, {args!r}]", kwargs=f"{{'x': {kwargs!r}}}")
    clean = scrub_event(event)
    assert clean is not None
    assert CANARY not in repr(clean)
    assert clean["args"] == "('<lead payload masked>', '<masked>')"


def test_a_sender_repr_is_masked_the_worker_repr_kept() -> None:
    raw = sent_event(args=repr([{"partner": "acme", "lead": {"email": CANARY}}]))
    assert scrub_event(raw)["args"] == "('<lead payload masked; partner acme>',)"  # type: ignore[index]
    worker = sent_event(type="task-received", args="('<lead payload masked; partner acme>',)")
    assert scrub_event(worker)["args"] == worker["args"]  # type: ignore[index]
    # Celery cuts long reprs short ('...'): unreadable, so masked whole
    cut = sent_event(args="[{'lead': {'...}]")
    assert scrub_event(cut)["args"] == MASKED_ARGS  # type: ignore[index]


def test_a_lead_id_task_keeps_its_lead_id_and_nothing_else() -> None:
    event = sent_event(name="leads.enrich", args="('lead-123',)", kwargs="{}")
    assert scrub_event(event)["args"] == "('lead-123',)"  # type: ignore[index]
    smuggled = sent_event(name="leads.enrich", args=repr((CANARY, "x")), kwargs="{}")
    assert CANARY not in repr(scrub_event(smuggled))


def test_unknown_names_fields_and_event_types_are_not_shown() -> None:
    event = sent_event(name=CANARY, note=CANARY, eta=CANARY, queue=CANARY)
    clean = scrub_event(event)
    assert clean is not None
    assert clean["name"] == UNKNOWN_TASK
    assert CANARY not in repr(clean)
    assert scrub_event({"type": "task-custom", "uuid": "x", "hostname": "h"}) is None
    assert scrub_event({"type": "lead-data", "email": CANARY}) is None
    assert scrub_event(sent_event(hostname=CANARY + " x")) is None
    heartbeat = {"type": "worker-heartbeat", "hostname": "w1@host", "active": 2}
    assert scrub_event(heartbeat) == heartbeat


def test_results_exceptions_and_tracebacks() -> None:
    ok = sent_event(type="task-succeeded", result="'received; next leads.enrich'", runtime=0.01)
    assert scrub_event(ok)["result"] == "'received; next leads.enrich'"  # type: ignore[index]
    odd = sent_event(type="task-succeeded", result=repr({"email": CANARY}))
    assert scrub_event(odd)["result"] == "<masked>"  # type: ignore[index]
    assert scrub_exception("LeadDead('invalid (vehicle.vin, lead.email)')") == (
        "LeadDead('invalid (vehicle.vin, lead.email)')"
    )
    assert scrub_exception(f"ValueError('bad {CANARY}')") == "ValueError(<masked>)"
    assert scrub_exception(f"LeadDead('invalid {CANARY}')") == "LeadDead(<masked>)"
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/tasks/lead_tasks.py", line 60, in _run\n'
        "    return report(lead_id, step.outcome, step.next, task=task)\n"
        f"KeyError: '{CANARY}'\n"
        "tasks.outcomes.LeadDead: invalid (vehicle.vin)"
    )
    shown = scrub_traceback(traceback)
    assert shown is not None
    assert CANARY not in shown
    assert "KeyError: <masked>" in shown
    assert shown.endswith("tasks.outcomes.LeadDead: invalid (vehicle.vin)")
    assert '  File "/app/tasks/lead_tasks.py", line 60, in _run' in shown


def test_dead_messages_name_fields_and_statuses_never_values() -> None:
    error = {
        "message": f"lead.email: {CANARY} is not an email",
        "errors": [
            {"field": "lead.email", "message": f"{CANARY} is not an email"},
            {"field": "vehicle.vin", "message": "bad check digit"},
            {"field": "lead.email", "message": "again"},
            {"field": CANARY, "message": "a path that is not a path"},
        ],
    }
    assert dead_message("invalid", error) == "invalid (lead.email, vehicle.vin)"
    assert dead_message("rejected", {"status": 400, "message": CANARY}) == "rejected (HTTP 400)"
    assert dead_message("exhausted", {"status": None, "message": "refused"}) == "exhausted"
    assert dead_message("unroutable", None) == "unroutable"
    many = {"errors": [{"field": f"lead.f{i}"} for i in range(12)]}
    assert dead_message("invalid", many).endswith("lead.f7, +4 more)")


@pytest.mark.parametrize(
    ("outcome", "next_task", "task", "result"),
    [
        ("received", "enrich", "ingest", "received; next leads.enrich"),
        ("validated", "deliver", "", "validated; next leads.deliver"),
        ("delivered", None, "ingest", "already delivered"),
        ("delivered", None, "", "delivered"),
        ("retry", None, "", "retry"),
    ],
)
def test_what_a_task_reports(outcome: str, next_task: str | None, task: str, result: str) -> None:
    assert report("lead-1", outcome, next_task, task=task) == result


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("redis://:pw@127.0.0.1:6379/3", "redis://:pw@127.0.0.1:6379/3"),
        ("rediss://h:6380/0", "rediss://h:6380/0"),
        ("pyamqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:5672//"),
        ("amqp://u:p@rabbit//", "amqp://u:p@rabbit//"),
        ("unix:///run/redis.sock?db=2", "redis+socket:///run/redis.sock"),
    ],
)
def test_flower_gets_a_broker_url_it_knows(url: str, plain: str) -> None:
    assert plain_broker_url(url) == plain


@pytest.mark.parametrize(
    ("url", "api", "queues_url"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", None, "http://127.0.0.1:15672/api/queues/%2F"),
        ("amqp://u:p@rabbit:5672/prod", None, "http://rabbit:15672/api/queues/prod"),
        (
            "amqp://u:p@rabbit/a%2Fb",
            "https://mq.example/api/",
            "https://mq.example/api/queues/a%2Fb",
        ),
    ],
)
def test_rabbitmq_queue_lengths_ask_the_management_api_for_the_right_vhost(
    url: str, api: str | None, queues_url: str
) -> None:
    broker = LeadRabbitMQ(url, api)
    assert urljoin(broker.http_api, "queues/" + broker.vhost) == queues_url
