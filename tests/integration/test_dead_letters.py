"""The dead-letter registry (`store.dead_letters`) against a real Redis: listing with
filters before the limit, replay planning and execution, purge; and `dlq list` on it."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from click.testing import CliRunner

from leadpipe.cli import main
from pipeline.states import DeadReason, LeadState
from store import dead_letters as registry_module
from store.dead_letters import DeadLetters, EnqueueFailed
from store.records import LeadStore
from tests.conftest import flush_owned_database

pytestmark = pytest.mark.integration


def _dead(store: LeadStore, reason: DeadReason, at: float) -> str:
    lead_id = f"dl-{uuid.uuid4().hex[:10]}"
    fields = {"payload": json.dumps({"n": at}), "error": json.dumps({"message": "bad"})}
    assert store.create(lead_id, fields, now=at, dead_reason=reason) is None
    return lead_id


def _half_replayed(store: LeadStore, lead_id: str) -> None:
    """What a replay killed between its two steps leaves: `received`, still indexed."""
    assert store.replay_prepare(lead_id, {"action": "replay"}).status == "ok"
    assert store.redis.zscore(store.keys.dead, lead_id) is not None


def test_the_limit_counts_only_entries_that_match(
    store: LeadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five invalid dead letters whose two newest are half replayed (stale entries)
    ids = [_dead(store, DeadReason.INVALID, at=1000.0 + n) for n in range(5)]
    for lead_id in ids[-2:]:
        _half_replayed(store, lead_id)
    # ... and a listing that reads the index one small page at a time
    monkeypatch.setattr(registry_module, "LIST_PAGE", 1)
    registry = DeadLetters(store)

    # When three are asked for, by reason and without
    by_reason = registry.entries(reason=DeadReason.INVALID, limit=3)
    every = registry.entries(limit=3)

    # Then three come back, newest first, none of them stale
    assert [e["leadId"] for e in by_reason] == [ids[2], ids[1], ids[0]]
    assert [e["leadId"] for e in every] == [ids[2], ids[1], ids[0]]
    # And the limit still limits; --since still filters
    assert [e["leadId"] for e in registry.entries(limit=1)] == [ids[2]]
    assert [e["leadId"] for e in registry.entries(since=1001.0, limit=10)] == [ids[2], ids[1]]


def test_a_lead_dead_again_of_another_reason_is_listed_under_that_reason_only(
    store: LeadStore,
) -> None:
    lead_id = _dead(store, DeadReason.INVALID, at=2000.0)
    _half_replayed(store, lead_id)
    store.kill(lead_id, DeadReason.UNROUTABLE, {"error": "{}"}, expect=[LeadState.RECEIVED])
    registry = DeadLetters(store)
    assert registry.entries(reason=DeadReason.INVALID) == []
    (entry,) = registry.entries(reason=DeadReason.UNROUTABLE)
    assert (entry["leadId"], entry["reason"]) == (lead_id, "unroutable")


def test_a_replay_the_broker_refuses_stops_and_a_second_one_resumes(store: LeadStore) -> None:
    # Given two dead letters and a broker that is down
    first, second = (_dead(store, DeadReason.EXHAUSTED, at=3000.0 + n) for n in range(2))
    registry = DeadLetters(store)

    def broker_down(lead_id: str) -> None:
        raise EnqueueFailed("connection refused")

    # When both are replayed
    items = [registry.plan(first), registry.plan(second)]
    assert [i.action for i in items] == ["replay", "replay"]
    registry.replay(items, broker_down)

    # Then the first is prepared but not sent, the second not attempted; both stay listed
    assert [i.done for i in items] == ["failed", "not-attempted"]
    assert store.load(first, "state") == [LeadState.RECEIVED]
    assert store.load(second, "state") == [LeadState.DEAD]
    assert set(registry.ids()) == {first, second}

    # When the broker is back and every dead letter is replayed again
    sent: list[str] = []
    again = [registry.plan(lead_id) for lead_id in registry.ids()]
    registry.replay(again, sent.append)

    # Then each lead is enqueued once, the interrupted one resumed, and the index empty
    assert sorted(sent) == sorted([first, second])
    assert {i.lead_id: i.done for i in again} == {first: "resumed", second: "replayed"}
    assert registry.ids() == []


def test_plan_skips_what_is_not_a_dead_letter_and_dry_run_changes_nothing(
    store: LeadStore,
) -> None:
    registry = DeadLetters(store)
    dead = _dead(store, DeadReason.REJECTED, at=4000.0)
    alive = f"alive-{uuid.uuid4().hex[:8]}"
    assert store.create(alive, {"payload": "{}"}) is None
    items = [registry.plan(i) for i in (dead, alive, "no-such-lead")]
    assert [i.action for i in items] == ["replay", "skip", "unknown"]
    registry.dry_run(items)
    assert [i.done for i in items] == ["would-replay", "would-skip", "unknown"]
    assert store.load(dead, "state") == [LeadState.DEAD]


def test_purge_removes_dead_letters_only(store: LeadStore) -> None:
    registry = DeadLetters(store)
    dead = _dead(store, DeadReason.INVALID, at=5000.0)
    alive = f"alive-{uuid.uuid4().hex[:8]}"
    assert store.create(alive, {"payload": "{}"}) is None
    results = registry.purge_many([dead, alive, "no-such-lead"])
    assert [r["result"] for r in results] == ["purged", "received", "missing"]
    assert registry.show(dead) is None
    assert registry.ids() == []


def test_dlq_list_with_reason_and_limit_returns_the_limit_when_that_many_match(
    redis_url: str,
) -> None:
    # Given the CLI's own key space: four invalid dead letters, the two newest half
    # replayed, and one unroutable newer than all of them
    flush_owned_database(redis_url)
    client = redis.Redis.from_url(redis_url)
    store = LeadStore(client)
    try:
        ids = [_dead(store, DeadReason.INVALID, at=6000.0 + n) for n in range(4)]
        for lead_id in ids[-2:]:
            _half_replayed(store, lead_id)
        _dead(store, DeadReason.UNROUTABLE, at=7000.0)
        env = {"LEADPIPE_REDIS_URL": redis_url, "LEADPIPE_BROKER_URL": None}

        # When two invalid ones are listed
        args = ["dlq", "list", "--reason", "invalid", "--limit", "2", "--json"]
        result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)

        # Then two come back (the filters apply before the limit)
        assert result.exit_code == 0, result.output
        listed = json.loads(result.stdout)
        assert [e["leadId"] for e in listed] == [ids[1], ids[0]]
        assert {e["reason"] for e in listed} == {"invalid"}
    finally:
        client.close()
        flush_owned_database(redis_url)
