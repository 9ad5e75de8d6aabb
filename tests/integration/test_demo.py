"""`leadpipe demo` as a new user runs it: nothing configured, the embedded Redis under a
fresh LEADPIPE_HOME, and nothing left running afterwards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from leadpipe.demo import DEMO_DATABASE
from leadpipe.demo_samples import samples
from store.embedded import PORT_FILE, ensure_embedded_redis, stop_embedded_redis
from tests.integration.procs import (
    LEADPIPE,
    alive,
    clean_env,
    port_answers,
    processes_mentioning,
    running,
)
from tests.stack import Stack, valid_payload

pytestmark = pytest.mark.integration

#: The demo promises under 60 s on two cores; the test allows some slack for a busy CI.
DEMO_TIMEOUT_SECONDS = 90
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def run_demo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # LEADPIPE_REDIS_URL (and every other leadpipe variable) unset: the embedded default
    env = clean_env(LEADPIPE_HOME=str(home))
    return subprocess.run(
        [LEADPIPE, "demo", *args],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        start_new_session=True,
    )


def assert_nothing_left(worker_pids: list[int], worker_names: list[str]) -> None:
    assert worker_pids and all(not alive(pid) for pid in worker_pids), worker_pids
    for name in worker_names:
        assert not processes_mentioning(name), processes_mentioning(name)


def test_demo_on_a_fresh_machine_ends_every_lead_as_expected_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    # When a new user runs the demo with nothing configured
    result = run_demo(home)
    out = result.stdout + result.stderr
    # Then it succeeds and lists every lead with its id and where it ended
    assert result.returncode == 0, out
    keys = [s.key for s in samples("x")]
    ids = set()
    for key in keys:
        row = re.search(rf"│ \d+ +│ {key} +│ ({UUID}) │", result.stdout)
        assert row, f"{key} missing from the final table:\n{out}"
        ids.add(row.group(1))
    assert len(ids) == len(keys)
    assert f"{len(keys)} of {len(keys)} leads ended as expected" in out
    # And partner acme's webhook receiver verified its events, one retried after a 503
    assert "acme's webhook receiver verified" in out
    assert re.search(
        r"lead\.delivered for lead \S+ \(webhook-id msg_[0-9a-f]+, signature "
        r"verified, after 1 retry\)",
        out,
    ), out
    # And it used the embedded Redis it started, and stopped it
    match = re.search(rf"embedded under .* \(started by the demo\).*:(\d+)/{DEMO_DATABASE}", out)
    assert match, out
    assert not port_answers(int(match.group(1)))
    assert not (home / PORT_FILE).exists()
    assert not processes_mentioning(str(home)), processes_mentioning(str(home))
    # And no worker process is left
    workers = re.findall(r"(demo-(?:cpu|io|notify)-[0-9a-f]+) \(pid (\d+)\)", out)
    assert len(workers) == 3, out
    assert_nothing_left([int(p) for _, p in workers], [n for n, _ in workers])


def test_demo_reruns_on_a_running_embedded_redis_and_leaves_it_running(tmp_path: Path) -> None:
    # Given an embedded Redis someone already started under LEADPIPE_HOME
    home = tmp_path / "home"
    url = ensure_embedded_redis(home)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        # When the demo runs twice there, with --json
        for _ in range(2):
            result = run_demo(home, "--json")
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout)
            # Then each run's leads are its own and all ended as expected
            assert report["ok"] is True
            assert [lead["ok"] for lead in report["leads"]] == [True] * len(report["leads"])
            assert sum(report["counts"].values()) == len(report["leads"]) == len(samples("x"))
            by_key = {lead["sample"]: lead for lead in report["leads"]}
            assert by_key["flaky"]["attempts"] == [503, 503, 200]
            assert by_key["rejected"]["reason"] == "rejected"
            assert by_key["vin"]["vehicleIdMethod"] == "vin"
            assert by_key["plate_state"]["dealerUuid"] == "demo-lone-star"
            # And the Redis it did not start is still running, its workers are gone
            assert port_answers(port)
            workers = report["workers"]
            assert_nothing_left([w["pid"] for w in workers], [w["name"] for w in workers])
    finally:
        stop_embedded_redis(home)
    assert not port_answers(port)


def test_ctrl_c_during_the_demo_stops_everything_it_started(tmp_path: Path) -> None:
    # Given a demo whose workers are running
    home = tmp_path / "home"
    with running(["demo"], clean_env(LEADPIPE_HOME=str(home)), tmp_path / "run") as demo:
        demo.wait_for_stdout("workers ready")
        out = demo.stdout()
        workers = re.findall(r"(demo-(?:cpu|io|notify)-[0-9a-f]+) \(pid (\d+)\)", out)
        port = re.search(rf":(\d+)/{DEMO_DATABASE}", out)
        assert len(workers) == 3 and port, out
        # (paused, so the demo cannot finish its leads before the Ctrl+C lands)
        for _, pid in workers:
            os.kill(int(pid), signal.SIGSTOP)
        # When the user presses Ctrl+C
        demo.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        for _, pid in workers:
            os.kill(int(pid), signal.SIGCONT)
        # Then it exits 130 having stopped its workers and the Redis it started
        assert demo.wait(timeout=60) == 130, demo.stdout() + demo.stderr()
    assert "interrupted" in demo.stderr()
    assert_nothing_left([int(p) for _, p in workers], [n for n, _ in workers])
    assert not port_answers(int(port.group(1)))


def test_demo_refuses_a_redis_url_with_work_of_others_on_it(stack: Stack, tmp_path: Path) -> None:
    # Given a lead waiting on the queues of the Redis LEADPIPE_REDIS_URL names
    lead_id = stack.send(valid_payload(), partner="acme")
    env = clean_env(LEADPIPE_REDIS_URL=stack.redis_url, LEADPIPE_HOME=str(tmp_path / "home"))
    # When the demo is pointed at it
    result = subprocess.run([LEADPIPE, "demo"], env=env, capture_output=True, text=True, timeout=60)
    # Then it refuses, says why, and left the waiting lead alone
    assert result.returncode == 1, result.stdout + result.stderr
    assert "LEADPIPE_REDIS_URL is in use (1 queued message(s))" in result.stderr
    assert stack.redis.llen("leads.ingest") == 1
    assert stack.record(lead_id) is None
    assert "workers ready" not in result.stdout
