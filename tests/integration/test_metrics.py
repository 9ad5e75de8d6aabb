"""`leadpipe metrics` scraped over HTTP while a real worker delivers leads: the values
match what happened (the module's stack starts on an empty Redis database)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from leadpipe.cli import main
from tests.integration.procs import clean_env, running
from tests.stack import Stack, valid_payload

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_follow_the_leads_through_a_real_worker(stack: Stack, tmp_path: Path) -> None:
    # Given leads waiting on the ingest queue before any worker runs: 3 that will be
    # delivered at once, 1 myKaarma rejects, 1 delivered after two 503s
    ids = [stack.send(valid_payload(), partner="acme") for _ in range(3)]
    ids += [stack.send(valid_payload(), partner="reject")]
    ids += [stack.send(valid_payload(), partner="flaky")]
    env = clean_env(**stack.env)
    with running(["metrics", "--port", "0", "--json"], env, tmp_path) as exporter:
        url = json.loads(exporter.first_line())["url"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

        # Then a scrape shows them queued and nothing delivered yet
        before = scrape(url)
        assert value(before, "leadpipe_redis_up") == 1
        assert value(before, "leadpipe_queue_depth", queue="leads.ingest") == 5
        assert value(before, "leadpipe_queue_depth", queue="leads.deliver") == 0
        assert value(before, "leadpipe_delivery_attempts_total", outcome="delivered") == 0
        assert value(before, "leadpipe_delivery_latency_seconds_count") == 0

        # When a worker has processed them all
        stack.start_worker("metrics", concurrency=4)
        records = stack.wait_for(ids)
        assert [records[i]["state"] for i in ids] == ["delivered"] * 3 + ["dead", "delivered"]

        # Then the next scrape counts exactly what happened
        after = scrape(url)
        # And once the dead letter is purged, the gauge drops but the counter alerts
        # use (`increase(leadpipe_dead_lettered_total[15m])`) does not go down
        purge = CliRunner().invoke(
            main, ["dlq", "purge", ids[3]], env={**stack.env}, catch_exceptions=False
        )
        assert purge.exit_code == 0, purge.output
        purged = scrape(url)
    assert value(purged, "leadpipe_dead_letters", reason="rejected") == 0
    assert value(purged, "leadpipe_dead_lettered_total", reason="rejected") == 1
    assert value(after, "leadpipe_queue_depth", queue="leads.ingest") == 0
    assert value(after, "leadpipe_leads", state="delivered") == 4
    assert value(after, "leadpipe_leads", state="dead") == 1
    assert value(after, "leadpipe_leads", state="received") == 0
    assert value(after, "leadpipe_dead_letters", reason="rejected") == 1
    assert value(after, "leadpipe_dead_letters", reason="invalid") == 0
    assert value(after, "leadpipe_dead_lettered_total", reason="rejected") == 1
    assert value(after, "leadpipe_dead_lettered_total", reason="invalid") == 0
    assert value(after, "leadpipe_delivery_attempts_total", outcome="delivered") == 4
    assert value(after, "leadpipe_delivery_attempts_total", outcome="rejected") == 1
    assert value(after, "leadpipe_delivery_attempts_total", outcome="transient") == 2
    assert value(after, "leadpipe_scheduled_retries") == 0
    assert value(after, "leadpipe_unreadable_messages_total") == 0
    assert value(after, "leadpipe_redis_used_memory_bytes") > 0
    assert value(after, "leadpipe_redis_max_memory_bytes") == int(
        stack.redis.info("memory")["maxmemory"]
    )
    assert value(after, "leadpipe_notifications", state="pending") == 0  # no webhooks here
    # The histogram: one observation per delivered lead, cumulative buckets, a sum
    assert value(after, "leadpipe_delivery_latency_seconds_count") == 4
    assert value(after, "leadpipe_delivery_latency_seconds_bucket", le="+Inf") == 4
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in after.items()
        if name == "leadpipe_delivery_latency_seconds_bucket"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    total = value(after, "leadpipe_delivery_latency_seconds_sum")
    assert 0 < total < 4 * 30
    # And `--once` prints the same numbers without serving
    cli_env: dict[str, str | None] = {**stack.env, "LEADPIPE_BROKER_URL": None}
    once = CliRunner().invoke(main, ["metrics", "--once"], env=cli_env, catch_exceptions=False)
    assert once.exit_code == 0
    assert value(parse(once.output), "leadpipe_delivery_attempts_total", outcome="delivered") == 4
