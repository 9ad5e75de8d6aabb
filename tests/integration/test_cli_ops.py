"""The operator commands (CONTRACT section 6: submit, status, dlq, stats) against a real
worker, a real Redis and the fake myKaarma: in process through click's CliRunner, and
as real `leadpipe` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from leadpipe.cli import main
from leadpipe.cli.context import CliContext
from leadpipe.runner import WorkerProcess
from pipeline.states import DeadReason, LeadState
from store.views import iso
from tests.stack import ROUTING, Stack, valid_payload

pytestmark = pytest.mark.integration

LEADPIPE = str(Path(sys.executable).with_name("leadpipe"))
QUEUES = {"leads.ingest", "leads.enrich", "leads.deliver", "leads.notify", "celery"}
#: A payload every rule rejects for its email only.
BAD_EMAIL = {"firstName": "Jane", "lastName": "Doe", "email": "not-an-email"}


@pytest.fixture(scope="module", autouse=True)
def worker(stack: Stack) -> WorkerProcess:
    return stack.start_worker("cli", concurrency=8)


def cli(stack: Stack, *args: str, input: str | None = None) -> Result:
    """Run `leadpipe ARGS` in this process."""
    env: dict[str, str | None] = {**stack.env, "LEADPIPE_BROKER_URL": None}
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)


def run(stack: Stack, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `leadpipe ARGS` as a real process, as an operator does."""
    env = {**os.environ, **stack.env}
    env.pop("LEADPIPE_BROKER_URL", None)
    return subprocess.run(
        [LEADPIPE, *args], env=env, input=input, capture_output=True, text=True, timeout=60
    )


def as_json(output: str) -> Any:
    return json.loads(output)


def in_dlq(stack: Stack, lead_id: str) -> bool:
    return stack.redis.zscore(stack.store.keys.dead, lead_id) is not None


def dead_lead(stack: Stack, **payload_overrides: Any) -> str:
    """A lead that dies invalid (bad email) for a routed partner."""
    lead_id = stack.send(valid_payload(lead=BAD_EMAIL, **payload_overrides), partner="acme")
    assert stack.wait_for([lead_id])[lead_id]["reason"] == "invalid"
    return lead_id


def rewrite_routing(stack: Stack, text: str, timeout: float = 15.0) -> None:
    """Replace the routing file and wait until the worker routes by the new version.

    A fresh probe partner in the new version proves the worker has reread it: probes
    are sent until one is delivered; the ones that died before are purged.
    """
    path = Path(stack.env["LEADPIPE_ROUTING_FILE"])
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'{text}\n[partners.{probe}]\ndealer_uuid = "d-ok"\n')
    os.replace(tmp, path)
    deadline = time.monotonic() + timeout
    while True:
        lead_id = stack.send(valid_payload(), partner=probe)
        record = stack.wait_for([lead_id])[lead_id]
        if record["state"] == "delivered":
            return
        assert stack.store.purge(lead_id) == "purged"
        assert time.monotonic() < deadline, "the worker did not reread the routing file"


# -- submit ------------------------------------------------------------------------------


def test_submit_json_lines_prints_ids_in_order_reports_a_broken_line_and_delivers(
    stack: Stack, tmp_path: Path
) -> None:
    # Given JSON Lines with three leads and a broken third line
    payloads = [valid_payload() for _ in range(3)]
    broken = '{"lead": {"firstName": '
    lines = [json.dumps(payloads[0]), json.dumps(payloads[1]), broken, json.dumps(payloads[2])]
    leads = tmp_path / "leads.jsonl"
    leads.write_text("\n".join(lines) + "\n")
    # When it is submitted
    result = cli(stack, "submit", str(leads), "--partner", "acme")
    # Then one id per lead, in input order; the broken entry reported; exit 1
    assert result.exit_code == 1, result.output
    ids = result.stdout.split()
    assert len(ids) == 3 and len(set(ids)) == 3
    assert "entry 3: line 3: not valid JSON" in result.stderr
    assert "Sent 3 of 4 leads" in result.stderr
    stack.wait_for(ids)
    for lead_id, payload in zip(ids, payloads, strict=True):
        status = cli(stack, "status", lead_id, "--json")
        assert status.exit_code == 0
        record = as_json(status.stdout)
        assert (record["leadId"], record["state"]) == (lead_id, "delivered")
        assert (record["partner"], record["transactionId"]) == ("acme", payload["transactionId"])
    stack.assert_delivered_once(ids)


def test_submit_reads_stdin_in_a_real_process_and_prints_json(stack: Stack) -> None:
    # Given a JSON array on standard input
    payloads = [valid_payload(), valid_payload()]
    # When submitted with --json
    proc = run(stack, "submit", "-", "--partner", "acme", "--json", input=json.dumps(payloads))
    # Then a JSON array, one entry per lead, in input order
    assert proc.returncode == 0, proc.stderr
    entries = as_json(proc.stdout)
    assert [e["position"] for e in entries] == [1, 2]
    ids = [e["leadId"] for e in entries]
    records = stack.wait_for(ids)
    assert [records[i]["transactionId"] for i in ids] == [p["transactionId"] for p in payloads]
    assert all(records[i]["state"] == "delivered" for i in ids)
    # And one JSON object in, one JSON object out
    single = run(stack, "submit", "-", "--json", input=json.dumps(valid_payload(partner="acme")))
    assert single.returncode == 0, single.stderr
    entry = as_json(single.stdout)
    assert entry["position"] == 1
    assert stack.wait_for([entry["leadId"]])[entry["leadId"]]["state"] == "delivered"


def test_submit_refuses_non_objects_but_sends_the_rest_and_nothing_is_nothing(
    stack: Stack,
) -> None:
    good = valid_payload()
    result = cli(stack, "submit", "-", "--partner", "acme", "--json", input=json.dumps([42, good]))
    assert result.exit_code == 1
    bad, sent = as_json(result.stdout)
    assert (bad["position"], bad["leadId"]) == (1, None)
    assert "not a JSON object" in bad["error"]
    assert stack.wait_for([sent["leadId"]])[sent["leadId"]]["state"] == "delivered"
    empty = cli(stack, "submit", "-", input="  \n")
    assert empty.exit_code == 0
    assert "Nothing to do" in empty.stderr


# -- status ------------------------------------------------------------------------------


def test_status_shows_the_record_and_an_unknown_lead_exits_1_with_a_hint(stack: Stack) -> None:
    lead_id = stack.send(valid_payload(), partner="acme")
    stack.wait_for([lead_id])
    human = run(stack, "status", lead_id)
    assert human.returncode == 0, human.stderr
    assert "state: delivered" in human.stdout
    assert "dealerUuid: d-ok" in human.stdout
    assert "attempt 1:" in human.stdout and "200" in human.stdout
    record = as_json(run(stack, "status", lead_id, "--json").stdout)
    assert record["leadId"] == lead_id
    assert [a["status"] for a in record["attempts"]] == [200]
    assert record["prospectUuid"]
    # An unknown lead: exit 1, nothing on stdout, and what to do next
    for args in (("status", "no-such-lead"), ("dlq", "show", "no-such-lead")):
        missing = run(stack, *args)
        assert missing.returncode == 1
        assert missing.stdout == ""
        assert "no lead no-such-lead" in missing.stderr
        assert "leadpipe dlq list" in missing.stderr


def test_a_bad_setting_is_a_usage_error_naming_the_variable(stack: Stack) -> None:
    env: dict[str, str | None] = {**stack.env, "LEADPIPE_RETRY_MAX_ATTEMPTS": "many"}
    result = CliRunner().invoke(main, ["stats"], env=env)
    assert result.exit_code == 2
    assert "LEADPIPE_RETRY_MAX_ATTEMPTS" in result.stderr


# -- dlq: list, show, replay -------------------------------------------------------------


def test_a_rejected_lead_is_listed_then_replayed_once_after_the_route_is_fixed(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a lead myKaarma rejects (partner notfound routes to d-404), with a warning
    payload = valid_payload(partner="someone-else")
    lead_id = stack.send(payload, partner="notfound")
    assert stack.wait_for([lead_id])[lead_id]["state"] == "dead"

    # When the operator lists the dead letters, it is there with the 404
    listed = as_json(cli(stack, "dlq", "list", "--reason", "rejected", "--json").stdout)
    entry = next(e for e in listed if e["leadId"] == lead_id)
    assert (entry["reason"], entry["error"]["status"], entry["attempts"]) == ("rejected", 404, 1)
    assert entry["payload"] == payload
    # ... masked for people, in full in `dlq show`
    human = cli(stack, "dlq", "list", "--reason", "rejected")
    line = next(row for row in human.stdout.splitlines() if row.startswith(lead_id))
    assert "HTTP 404" in line and "J*** D*** <j***@example.com>" in line
    assert "jane.doe@example.com" not in human.stdout
    shown = cli(stack, "dlq", "show", lead_id)
    assert "jane.doe@example.com" in shown.stdout
    assert f"leadpipe dlq replay {lead_id}" in shown.stdout

    # And a dry run changes nothing and sends nothing
    before = stack.record(lead_id)
    sent: list[str] = []
    monkeypatch.setattr(CliContext, "enqueue_enrich", lambda self, i: sent.append(i))
    dry = cli(stack, "dlq", "replay", lead_id, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    report = as_json(dry.stdout)
    assert (report["dryRun"], report["replayed"]) == (True, 1)
    assert report["leads"][0]["result"] == "would-replay"
    plain = cli(stack, "dlq", "replay", lead_id, "--dry-run")
    assert "Nothing was changed" in plain.stdout
    assert sent == []
    assert stack.record(lead_id) == before
    assert in_dlq(stack, lead_id)
    monkeypatch.undo()

    # When the route is fixed and the lead replayed (a real process)
    rewrite_routing(stack, ROUTING.replace('dealer_uuid = "d-404"', 'dealer_uuid = "d-ok"'))
    replayed = run(stack, "dlq", "replay", lead_id)
    assert replayed.returncode == 0, replayed.stderr
    assert "Replayed 1 lead; skipped 0." in replayed.stdout

    # Then it is delivered once, under the same id, with the replay in its history
    record = stack.wait_for([lead_id])[lead_id]
    assert (record["state"], record["dealerUuid"], record["replays"]) == ("delivered", "d-ok", 1)
    (event,) = record["history"]
    assert (event["action"], event["previousReason"]) == ("replay", "rejected")
    assert event["previousError"]["status"] == 404
    assert "previousPayload" not in event
    assert len(record["warnings"]) == len(set(record["warnings"])) == 1  # not repeated
    ok = [r for r in stack.fake.requests if r["leadId"] == lead_id and r["status"] == 200]
    assert len(ok) == 1
    stack.assert_delivered_once([lead_id])
    assert not in_dlq(stack, lead_id)

    # And replaying a delivered lead is refused
    again = cli(stack, "dlq", "replay", lead_id, "--json")
    assert again.exit_code == 1
    result = as_json(again.stdout)["leads"][0]
    assert (result["result"], result["message"]) == ("skipped", "already delivered")
    stack.assert_delivered_once([lead_id])


def test_an_invalid_lead_is_fixed_with_payload_and_delivered_keeping_the_old_payload(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a lead that died invalid
    broken = valid_payload(lead=BAD_EMAIL)
    lead_id = stack.send(broken, partner="acme")
    assert stack.wait_for([lead_id])[lead_id]["reason"] == "invalid"
    before = stack.record(lead_id)
    # A --payload that is still invalid is refused, with its errors, and changes nothing
    still_bad = tmp_path / "still-bad.json"
    still_bad.write_text(json.dumps({**broken, "vehicle": {"state": "CA", "mileage": 5}}))
    refused = cli(stack, "dlq", "replay", lead_id, "--payload", str(still_bad))
    assert refused.exit_code == 1
    assert "lead.email" in refused.stderr and "nothing was changed" in refused.stderr
    assert stack.record(lead_id) == before
    # --payload is for exactly one lead
    fixed = {**broken, "lead": {**BAD_EMAIL, "email": "jane.fixed@example.com"}}
    fixed_file = tmp_path / "fixed.json"
    fixed_file.write_text(json.dumps(fixed))
    for many in ((lead_id, "other-id"), ("--all",)):
        usage = cli(stack, "dlq", "replay", *many, "--payload", str(fixed_file))
        assert usage.exit_code == 2
    # When replayed with the fixed payload
    proc = run(stack, "dlq", "replay", lead_id, "--payload", str(fixed_file))
    assert proc.returncode == 0, proc.stderr
    # Then it is delivered with the new payload; the old one is kept in the history
    record = stack.wait_for([lead_id])[lead_id]
    assert record["state"] == "delivered"
    assert record["payload"] == fixed
    assert record["request"]["customer"]["emails"][0]["emailAddress"] == "jane.fixed@example.com"
    (event,) = record["history"]
    assert (event["previousReason"], event["previousPayload"]) == ("invalid", broken)
    stack.assert_delivered_once([lead_id])


def test_a_replay_killed_midway_resumes_and_delivers_each_lead_once(stack: Stack) -> None:
    # Given four leads dead as unroutable, then a route for their partner
    start = iso(time.time())
    assert start is not None
    partner = f"limbo-{uuid.uuid4().hex[:8]}"
    ids = [stack.send(valid_payload(), partner=partner) for _ in range(4)]
    assert {r["reason"] for r in stack.wait_for(ids).values()} == {"unroutable"}
    rewrite_routing(stack, f'{ROUTING}\n[partners.{partner}]\ndealer_uuid = "d-ok"\n')
    # ... and a replay killed after preparing two of them, before enqueuing them:
    # exactly what a CLI killed between its two steps leaves behind
    prepared_at = time.monotonic()
    for lead_id in ids[:2]:
        history = {"at": iso(time.time()), "action": "replay", "previousReason": "unroutable"}
        assert stack.store.replay_prepare(lead_id, history).status == "ok"
        assert stack.record(lead_id)["state"] == "received"  # type: ignore[index]
        assert in_dlq(stack, lead_id)
    # When the operator runs the replay again
    began = time.monotonic()
    proc = run(
        stack,
        *("dlq", "replay", "--all", "--reason", "unroutable", "--since", start),
        *("--rate", "10", "--json"),
    )
    elapsed = time.monotonic() - began
    # Then every lead is delivered exactly once and none is left in the dead letters
    assert proc.returncode == 0, proc.stderr
    report = as_json(proc.stdout)
    results = {lead["leadId"]: lead["result"] for lead in report["leads"]}
    assert set(results) == set(ids)
    assert [results[i] for i in ids[2:]] == ["replayed", "replayed"]
    # resumed; only if the worker's sweeper (lease 5 s) got there first, skipped
    lease = float(stack.env["LEADPIPE_LEASE_SECONDS"])
    resumed = {results[i] for i in ids[:2]}
    assert resumed == {"resumed"} or (
        time.monotonic() - prepared_at > lease and resumed <= {"resumed", "skipped"}
    )
    records = stack.wait_for(ids)
    assert {r["state"] for r in records.values()} == {"delivered"}
    stack.assert_delivered_once(ids)
    assert not any(in_dlq(stack, lead_id) for lead_id in ids)
    # --rate 10 paced at least the enqueues after the first
    enqueued = sum(1 for r in results.values() if r in ("replayed", "resumed"))
    assert elapsed >= (enqueued - 1) / 10


def test_a_lead_dead_again_under_another_reason_before_the_replay_completes_is_listed_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an invalid dead letter, under an id no worker will see
    lead_id = f"cli-race-{uuid.uuid4().hex}"
    fields = {"payload": json.dumps(valid_payload()), "warnings": "[]"}
    assert stack.store.create(lead_id, fields, dead_reason=DeadReason.INVALID) is None

    # ... and a worker so quick the lead is dead again, now unroutable, before the CLI
    # completes its replay
    def quick_worker(self: CliContext, replayed: str) -> None:
        error = {"error": json.dumps({"message": "no route"})}
        stack.store.kill(replayed, DeadReason.UNROUTABLE, error, expect=[LeadState.RECEIVED])

    monkeypatch.setattr(CliContext, "enqueue_enrich", quick_worker)
    # When it is replayed
    assert cli(stack, "dlq", "replay", lead_id).exit_code == 0

    # Then it is one dead letter, listed and counted under its new reason only
    def listed(reason: str) -> set[str]:
        entries = as_json(cli(stack, "dlq", "list", "--reason", reason, "--json").stdout)
        return {e["leadId"] for e in entries}

    assert lead_id in listed("unroutable")
    assert lead_id not in listed("invalid")
    assert in_dlq(stack, lead_id)
    assert stack.store.purge(lead_id) == "purged"


def test_dlq_list_filters_by_reason_since_and_limit(stack: Stack) -> None:
    old = dead_lead(stack)
    start = iso(time.time())
    assert start is not None
    invalid = [dead_lead(stack), dead_lead(stack)]
    unroutable = stack.send(valid_payload(), partner=f"nobody-{uuid.uuid4().hex[:6]}")
    assert stack.wait_for([unroutable])[unroutable]["reason"] == "unroutable"
    new = {*invalid, unroutable}

    recent = as_json(cli(stack, "dlq", "list", "--since", start, "--json").stdout)
    assert {e["leadId"] for e in recent} == new
    failed_at = [e["failedAt"] for e in recent]
    assert failed_at == sorted(failed_at, reverse=True)
    everything = as_json(cli(stack, "dlq", "list", "--json").stdout)
    assert old in {e["leadId"] for e in everything}

    by_reason = as_json(
        cli(stack, "dlq", "list", "--reason", "invalid", "--since", start, "--json").stdout
    )
    assert {e["leadId"] for e in by_reason} == set(invalid)
    assert {e["reason"] for e in by_reason} == {"invalid"}
    assert all(e["error"]["errors"][0]["field"] == "lead.email" for e in by_reason)

    limited = as_json(cli(stack, "dlq", "list", "--since", start, "--limit", "1", "--json").stdout)
    assert [e["leadId"] for e in limited] == [recent[0]["leadId"]]

    for bad in (("--since", "yesterday"), ("--reason", "bogus"), ("--limit", "0")):
        assert cli(stack, "dlq", "list", *bad).exit_code == 2


def test_purge_needs_yes_for_all_and_refuses_what_is_not_dead(stack: Stack) -> None:
    start = iso(time.time())
    assert start is not None
    first, second = dead_lead(stack), dead_lead(stack)
    delivered = stack.send(valid_payload(), partner="acme")
    stack.wait_for([delivered])

    refused = cli(stack, "dlq", "purge", "--all")
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert stack.record(first) is not None

    one = cli(stack, "dlq", "purge", first)
    assert one.exit_code == 0
    assert "Purged 1 dead letter." in one.stdout
    assert cli(stack, "status", first).exit_code == 1

    not_dead = cli(stack, "dlq", "purge", delivered)
    assert not_dead.exit_code == 1
    assert "it is delivered" in not_dead.stderr
    assert stack.record(delivered)["state"] == "delivered"  # type: ignore[index]
    assert cli(stack, "dlq", "purge", "no-such-lead").exit_code == 1

    proc = run(stack, "dlq", "purge", "--all", "--yes", "--since", start, "--json")
    assert proc.returncode == 0, proc.stderr
    report = as_json(proc.stdout)
    assert (report["purged"], [r["leadId"] for r in report["leads"]]) == (1, [second])
    assert stack.record(second) is None
    assert not in_dlq(stack, second)
    assert stack.record(delivered) is not None


def test_replay_usage_errors_and_nothing_to_do(stack: Stack) -> None:
    assert cli(stack, "dlq", "replay").exit_code == 2
    assert cli(stack, "dlq", "replay", "x", "--all").exit_code == 2
    assert cli(stack, "dlq", "replay", "x", "--reason", "invalid").exit_code == 2
    unknown = cli(stack, "dlq", "replay", "no-such-lead", "--json")
    assert unknown.exit_code == 1
    assert as_json(unknown.stdout)["leads"][0]["result"] == "unknown"
    future = iso(time.time() + 3600)
    assert future is not None
    nothing = cli(stack, "dlq", "replay", "--all", "--since", future)
    assert nothing.exit_code == 0
    assert "Nothing to do" in nothing.stdout


# -- stats -------------------------------------------------------------------------------


def _truth(stack: Stack) -> tuple[Counter[str], Counter[str]]:
    """Leads by state and dead leads by reason, counted from the records themselves."""
    states: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for key in stack.redis.scan_iter(match=stack.store.keys.lead_pattern, count=500):
        if key.count(b":") != 2:
            continue  # a lead's attempts or history list
        state, reason = (
            v.decode() if isinstance(v, bytes) else str(v)
            for v in stack.redis.hmget(key, "state", "reason")
        )
        states[state] += 1
        if state == "dead":
            reasons[reason] += 1
    return states, reasons


def test_stats_json_matches_the_records(stack: Stack) -> None:
    delivered = stack.send(valid_payload(), partner="acme")
    stack.wait_for([delivered, dead_lead(stack)])
    deadline = time.monotonic() + 10
    while True:
        proc = run(stack, "stats", "--json")
        assert proc.returncode == 0, proc.stderr
        stats = as_json(proc.stdout)
        states, reasons = _truth(stack)
        matches = stats["states"] == dict(states) and stats["deadLetters"] == {
            r.value: reasons.get(r.value, 0) for r in DeadReason
        }
        if matches or time.monotonic() > deadline:
            break
    assert stats["states"] == dict(states)
    assert stats["deadLetters"] == {r.value: reasons.get(r.value, 0) for r in DeadReason}
    assert states["delivered"] >= 1 and reasons["invalid"] >= 1
    assert set(stats["queues"]) == QUEUES
    assert all(isinstance(n, int) and n >= 0 for n in stats["queues"].values())
    assert stats["scheduledRetries"] == stack.redis.zcard(stack.store.keys.retry)
    assert stats["counters"]["attempts.delivered"] >= states["delivered"]
    # the state Redis's memory, as INFO reports it (CONTRACT section 6)
    info = stack.redis.info("memory")
    assert stats["redis"]["maxMemoryBytes"] == int(info["maxmemory"])
    assert (
        0.5 * int(info["used_memory"])
        < stats["redis"]["usedMemoryBytes"]
        < 2 * int(info["used_memory"])
    )
    human = cli(stack, "stats")
    assert "State Redis memory:" in human.stdout
    assert human.exit_code == 0
    row = next(line for line in human.stdout.splitlines() if line.startswith("delivered"))
    assert row.split() == ["delivered", str(states["delivered"])]
