"""The figures of a benchmark run, from its legs' raw runs: medians with their spread,
paired ratios, and what limited each leg (bench/report.py words it)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench import measure, report


def spread(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    return {**measure.summary(values, digits), "runs": [round(v, digits) for v in values]}


def median_cpu(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r.get(k, 0.0) for r in runs), 1) for k in runs[0]}


def paired_ratio(top: Sequence[dict[str, Any]], bottom: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ratio of the two figures' medians (what the goal is checked on), and run i of
    one over run i of the other (they ran side by side) for the spread."""
    paired = [a["rate"] / b["rate"] for a, b in zip(top, bottom, strict=True)]
    value = statistics.median(a["rate"] for a in top) / statistics.median(b["rate"] for b in bottom)
    return {
        "value": round(value, 2),
        "min": round(min(paired), 2),
        "max": round(max(paired), 2),
        "runs": [round(r, 2) for r in paired],
        "median_of_runs": round(statistics.median(paired), 2),
    }


def figure(
    runs_by_leg: dict[str, list[dict[str, Any]]], key: str, consumers: dict[str, str], **bound: Any
) -> dict[str, Any]:
    """One leg's figure: the median rate and its spread, CPU, backlog, and what limited it."""
    runs = runs_by_leg[key]
    out = spread([r["rate"] for r in runs])
    out["n_per_run"] = runs[0]["n"]
    out["cpu_percent"] = median_cpu([r["cpu_percent"] for r in runs])
    out["cpu_ms_per_item"] = median_cpu([r["cpu_ms_per_item"] for r in runs])
    out["backlog"] = runs[len(runs) // 2]["backlog"]
    out["limit"] = report.limit(
        out["cpu_percent"], out["backlog"], consumers, rate=out["median"], **bound
    )
    return out


def latency_figure(latency_runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The latency leg at half the 0 ms capacity: p50, p99, max and CPU over its runs."""
    latency = {
        "fake_latency_ms": 0,
        "offered_per_s": latency_runs[0]["offered_per_s"],
        "n_per_run": latency_runs[0]["n"],
        "p50_ms": spread([r["p50_ms"] for r in latency_runs]),
        "p99_ms": spread([r["p99_ms"] for r in latency_runs]),
        "max_ms": spread([r["max_ms"] for r in latency_runs]),
        "cpu_percent": median_cpu([r["cpu_percent"] for r in latency_runs]),
    }
    latency["p50_ms"]["limit"] = latency["p99_ms"]["limit"] = (
        f"offered {latency['offered_per_s']:.0f} leads/s, half the 0 ms capacity"
    )
    return latency
