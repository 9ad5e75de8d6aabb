"""Races (issue 6, case 7): the same lead id sent three times at once, and a dead-letter
replay run twice at once, from two threads and as two `leadpipe dlq replay` processes.
Each lead is delivered once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from tests.reliability.conftest import StackFactory, wait_until
from tests.stack import BEHAVIOURS, valid_payload

pytestmark = pytest.mark.reliability

LEADPIPE = str(Path(sys.executable).with_name("leadpipe"))


def test_the_same_lead_id_sent_three_times_at_once_is_delivered_once(
    stacks: StackFactory,
) -> None:
    stack = stacks(latency_ms=20)
    host = stack.start_host("races")
    # Given 20 lead ids, each sent three times by three senders released together
    ids = [f"same-{uuid.uuid4()}" for _ in range(20)]
    payloads = {lead_id: valid_payload() for lead_id in ids}
    start = threading.Barrier(3 * len(ids))
    errors: list[BaseException] = []

    def send(lead_id: str) -> None:
        try:
            start.wait(timeout=30)
            stack.send(payloads[lead_id], partner="acme", task_id=lead_id)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    senders = [threading.Thread(target=send, args=(i,)) for i in ids for _ in range(3)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=60)
    assert not errors, errors

    # Then all three messages of each id are consumed ...
    def consumed() -> bool:
        log = "".join(w.log_text() for w in host)
        return all(log.count(f"Task leads.ingest[{i}] succeeded") == 3 for i in ids)

    wait_until(consumed, timeout=30, what="every ingest message consumed")
    # ... and each id is delivered once, with a single attempt
    ledger = stack.ledger(ids, timeout=30)
    assert ledger.count("delivered") == len(ids)
    for lead_id in ids:
        record = stack.record(lead_id)
        assert record is not None and len(record["attempts"]) == 1
    print(f"\nsame id x3 at once: {3 * len(ids)} messages, {ledger.summary()}")


def test_a_dead_letter_replay_run_twice_at_once_delivers_each_lead_once(
    stacks: StackFactory,
) -> None:
    stack = stacks()
    stack.start_host("replays")
    # Given 20 leads dead because myKaarma rejected them ...
    dead = [stack.send(valid_payload(), partner="reject") for _ in range(20)]
    records = stack.wait_for(dead, timeout=30)
    assert {(r["state"], r["reason"]) for r in records.values()} == {("dead", "rejected")}
    # ... and a myKaarma that accepts them now
    stack.fake.configure(behaviours={**BEHAVIOURS, "d-reject": "ok"})
    by_threads, by_cli = dead[:10], dead[10:]

    # When two threads replay the same ten at once (LeadStore's three steps)
    start = threading.Barrier(2)
    prepared: list[str] = []

    def replay() -> None:
        start.wait(timeout=30)
        for lead_id in by_threads:
            outcome = stack.store.replay_prepare(lead_id, {"action": "replay"})
            if outcome.status != "ok":
                continue  # the other thread has it
            prepared.append(lead_id)
            stack.upstream.send_task("leads.enrich", args=[lead_id], queue="leads.enrich")
            stack.store.replay_complete(lead_id)

    threads = [threading.Thread(target=replay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stack.wait_for(by_threads, timeout=30)
    # ... and two `leadpipe dlq replay --all` processes run at once on the other ten
    # (paced, so that the two runs overlap however their start-ups differ)
    env = {**os.environ, **stack.env}
    command = [LEADPIPE, "dlq", "replay", "--all", "--rate", "5", "--json"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        outputs = [run.communicate(timeout=60) for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait(timeout=10)
    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = [json.loads(out) for out, _err in outputs]

    # Then each lead was prepared once, is delivered once, and left the dead letters
    assert sorted(prepared) == sorted(by_threads)
    ledger = stack.ledger(dead, timeout=30)
    assert ledger.count("delivered") == len(dead)
    for lead_id in dead:
        record = stack.record(lead_id)
        assert record is not None
        assert record["replays"] == 1
        assert [a["status"] for a in record["attempts"]] == [400, 200]
    assert stack.redis.zcard(stack.store.keys.dead) == 0
    print(
        f"\nreplay x2 at once: threads prepared {len(prepared)} of {len(by_threads)}; "
        f"CLI runs replayed {[s['replayed'] for s in summaries]} and skipped "
        f"{[s['skipped'] for s in summaries]} of {len(by_cli)}; {ledger.summary()}"
    )
