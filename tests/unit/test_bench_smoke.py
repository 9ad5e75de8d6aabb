"""The benchmark's own logic, and one run of all its legs at tiny sizes (not timed).

The pure parts (message cloning, the steady-state rate, percentiles, the limit
diagnosis) need nothing; `test_quick_run_writes_every_figure` starts the bench's own
redis-server, the fake myKaarma and real workers, so it is marked integration.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import uuid
from pathlib import Path

import pytest

from bench import baseline_app, measure, report
from bench.figures import paired_ratio, spread
from bench.load import MessageCloner
from bench.measure import Drain, Sample

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _envelope(task_id: str, reply_to: str, body: object) -> bytes:
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "headers": {"id": task_id, "root_id": task_id},
            "properties": {
                "correlation_id": task_id,
                "reply_to": reply_to,
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def test_clones_get_fresh_ids_consistently_and_keep_reply_to() -> None:
    # Given a message whose body repeats its task id and names another one
    task_id, reply_to, other = (str(uuid.uuid4()) for _ in range(3))
    body = [[{"transactionId": other, "lead": task_id}], {}, {"chain": None}]
    cloner = MessageCloner(_envelope(task_id, reply_to, body))

    # When it is cloned twice
    first, second = (json.loads(cloner.clone()) for _ in range(2))

    # Then every id is new, the same id stays the same everywhere, reply_to is kept
    for clone in (first, second):
        new_id = clone["headers"]["id"]
        assert new_id != task_id and UUID.fullmatch(new_id)
        assert clone["headers"]["root_id"] == clone["properties"]["correlation_id"] == new_id
        assert clone["properties"]["reply_to"] == reply_to
        decoded = json.loads(base64.b64decode(clone["body"]))
        assert decoded[0][0]["lead"] == new_id
        assert decoded[0][0]["transactionId"] not in (other, new_id)
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_steady_rate_leaves_out_ramp_up_and_tail() -> None:
    # 100 items: a slow start, 10 items/s in the middle, a slow end
    samples = [Sample(0.0, 0, {"machine": 0.0}), Sample(5.0, 10, {"machine": 5.0})]
    samples += [Sample(5.0 + t, 10 + 10 * t, {"machine": 5.0 + t}) for t in range(1, 9)]
    samples.append(Sample(23.0, 100, {"machine": 23.0}))
    steady = Drain(100, samples).steady()
    assert steady["rate"] == pytest.approx(10.0)
    assert steady["cpu_percent"]["machine"] == pytest.approx(100.0)
    assert steady["cpu_ms_per_item"]["machine"] == pytest.approx(100.0)


@pytest.mark.parametrize(("q", "expected"), [(50, 50), (99, 99), (100, 100), (1, 1), (0, 1)])
def test_percentile_by_nearest_rank(q: float, expected: float) -> None:
    assert measure.percentile(list(range(100, 0, -1)), q) == expected


@pytest.mark.parametrize(
    ("cpu", "backlog", "expected"),
    [
        ({"worker:cpu": 97.0, "machine": 150.0}, {}, "CPU of worker:cpu"),
        ({"redis": 95.0, "machine": 120.0}, {}, "CPU of Redis"),
        ({"worker:cpu": 60.0, "machine": 195.0}, {"q.a": 90.0}, "machine CPU"),
        ({"worker:cpu": 60.0, "machine": 100.0}, {"q.a": 90.0, "q.b": 1.0}, "cpu worker"),
        ({"worker:cpu": 60.0, "machine": 100.0}, {}, "no resource saturated"),
    ],
)
def test_limit_names_the_resource(
    cpu: dict[str, float], backlog: dict[str, float], expected: str
) -> None:
    assert expected in report.limit(cpu, backlog, {"q.a": "cpu", "q.b": "io"})


@pytest.mark.parametrize(
    ("backlog", "expected"),
    [
        ({"a": 3000.0, "b": 4.0, "c": 0.0}, "a"),
        ({"a": 1400.0, "b": 5.0, "c": 450.0}, "c"),
        ({"a": 0.0, "b": 1.0}, None),
    ],
)
def test_bottleneck_is_the_last_queue_holding_a_backlog(
    backlog: dict[str, float], expected: str | None
) -> None:
    assert report.bottleneck(backlog) == expected


def test_slot_bound_wins_when_reached() -> None:
    text = report.limit(
        {"machine": 50.0}, {"q": 90.0}, {}, slots_bound=10, slots_queue="q", rate=9.5,
        slots_text="slots",
    )  # fmt: skip
    assert text == "slots"
    elsewhere = report.limit(
        {"machine": 50.0, "worker:cpu": 60.0}, {"r": 900.0, "q": 0.0}, {"r": "cpu"},
        slots_bound=10, slots_queue="q", rate=9.5, slots_text="slots",
    )  # fmt: skip
    assert "cpu worker" in elsewhere


def test_baseline_mirrors_the_pipeline_broker_settings() -> None:
    from tasks import celery as pipeline_celery
    from tasks import queues

    assert (baseline_app.INGEST_QUEUE, baseline_app.ENRICH_QUEUE, baseline_app.DELIVER_QUEUE) == (
        queues.INGEST_QUEUE,
        queues.ENRICH_QUEUE,
        queues.DELIVER_QUEUE,
    )
    assert baseline_app.VISIBILITY_TIMEOUT_SECONDS == pipeline_celery.VISIBILITY_TIMEOUT_SECONDS
    assert (
        baseline_app.UNACKED_RESTORE_INTERVAL_SECONDS
        == pipeline_celery.UNACKED_RESTORE_INTERVAL_SECONDS
    )
    config = pipeline_celery._configuration()
    for key in (
        "task_serializer",
        "accept_content",
        "task_acks_late",
        "worker_prefetch_multiplier",
    ):
        assert baseline_app.PIPELINE_LIKE_CONFIG[key] == config[key], key


RESULT_KEYS = {
    "baseline_chain_per_s",
    "pipeline_0ms_per_s",
    "ratio_0ms",
    "pipeline_200ms_per_s",
    "naive_200ms_per_s",
    "ratio_latency",
    "speedup_200ms_vs_naive",
    "latency_p50_ms",
    "latency_p99_ms",
    "rss_growth_percent",
    "pipeline_0ms_sentinel_per_s",
    "ratio_sentinel",
    "figures",
    "ratios",
    "latency",
    "memory",
    "machine",
    "plan",
    "goals",
    "cpu_percent",
    "leftover_processes",
    "wall_seconds",
}


def test_ratios_pair_runs_side_by_side_and_compare_medians() -> None:
    # Three runs of two legs that ran side by side (the quick run below has one)
    top = [{"rate": r} for r in (90.0, 120.0, 100.0)]
    bottom = [{"rate": r} for r in (100.0, 100.0, 125.0)]

    ratio = paired_ratio(top, bottom)

    # The goal is checked on median / median; the spread comes from run i over run i
    assert ratio["value"] == 1.0
    assert ratio["runs"] == [0.9, 1.2, 0.8]
    assert (ratio["min"], ratio["max"], ratio["median_of_runs"]) == (0.8, 1.2, 0.9)
    assert spread([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "runs": [3.0, 1.0, 2.0],
    }


@pytest.mark.integration
@pytest.mark.slow
def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    from bench.__main__ import main

    # Given the bench at tiny sizes, writing to a temporary directory
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    # When it runs every leg
    code = main(["--quick", "--out", str(tmp_path)])

    # Then it wrote every figure, left no process behind, and restored the signals
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= RESULT_KEYS
    for name in ("baseline_chain", "pipeline_0ms", "pipeline_200ms", "naive_200ms"):
        figure = results["figures"][name]
        assert figure["min"] <= figure["median"] <= figure["max"]
        assert len(figure["runs"]) == results["plan"]["runs"] == 1
    assert results["pipeline_0ms_per_s"] > 0 and results["naive_200ms_per_s"] > 0
    ratio = results["ratios"]["ratio_0ms"]
    assert ratio["value"] == results["ratio_0ms"]
    assert ratio["value"] == pytest.approx(
        results["pipeline_0ms_per_s"] / results["baseline_chain_per_s"], abs=0.01
    )
    # the Sentinel leg ran, against plain runs of the same size, and reports its ratio
    sentinel = results["figures"]["pipeline_0ms_sentinel"]
    assert sentinel["n_per_run"] == results["plan"]["sentinel_leads"]
    assert len(sentinel["runs"]) == 1 and results["pipeline_0ms_sentinel_per_s"] > 0
    assert results["ratios"]["ratio_sentinel"]["value"] == results["ratio_sentinel"] > 0
    assert "ratio_sentinel" in (tmp_path / "results.md").read_text()
    assert results["latency"]["p50_ms"]["median"] <= results["latency"]["p99_ms"]["median"]
    assert results["memory"]["leads"] >= results["memory"]["target_leads"]
    assert results["machine"]["cores_logical"] >= 1
    assert {row["goal"] for row in results["goals"]} >= {"ratio_0ms", "latency_p99_ms"}
    assert results["leftover_processes"] == []
    assert "| figure |" in (tmp_path / "results.md").read_text()
    assert {s: signal.getsignal(s) for s in handlers} == handlers
