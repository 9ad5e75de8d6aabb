"""`leadpipe worker` as an operator runs it: a real process supervising real workers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.procs import alive, clean_env, group_alive, running
from tests.stack import Stack, valid_payload

pytestmark = pytest.mark.integration


def _gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) or group_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_worker_delivers_a_lead_and_stops_cleanly_on_sigterm(stack: Stack, tmp_path: Path) -> None:
    # Given `leadpipe worker` running against the stack's Redis and fake myKaarma
    env = clean_env(**stack.env)
    with running(["worker", "--json", "--concurrency", "4"], env, tmp_path) as worker:
        started = json.loads(worker.first_line())
        workers = {w["name"]: w for w in started["workers"]}
        assert set(workers) == {"cpu", "io", "notify"}
        assert workers["io"]["queues"] == ["leads.deliver"]
        assert workers["notify"]["queues"] == ["leads.notify"]
        assert workers["io"]["concurrency"] == 4
        assert set(workers["cpu"]["queues"]) == {"leads.ingest", "leads.enrich", "celery"}
        pids = [w["pid"] for w in started["workers"]]
        assert all(alive(p) for p in pids)

        # When an upstream system sends a lead
        lead_id = stack.send(valid_payload(), partner="acme")

        # Then both workers handle it: validated by cpu, delivered by io
        record = stack.wait_for([lead_id], timeout=45)[lead_id]
        assert record["state"] == "delivered"
        stack.assert_delivered_once([lead_id])

        # When the supervisor gets SIGTERM (warm shutdown)
        worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

        # Then it exits 0 and leaves no worker process behind
        assert worker.wait(timeout=45) == 0, worker.stderr()
        assert _gone(pids), f"worker processes left: {pids}"


def test_worker_without_credentials_exits_non_zero_naming_the_variables(
    stack: Stack, tmp_path: Path
) -> None:
    env = clean_env(**stack.env)
    del env["MYKAARMA_USERNAME"], env["MYKAARMA_PASSWORD"]
    with running(["worker", "--json"], env, tmp_path) as worker:
        pids = [w["pid"] for w in json.loads(worker.first_line())["workers"]]
        code = worker.wait(timeout=60)
        stderr = worker.stderr()
    assert code == 2, stderr
    assert "MYKAARMA_USERNAME" in stderr and "MYKAARMA_PASSWORD" in stderr
    assert "io worker" in stderr  # the supervisor says which worker refused to start
    assert _gone(pids), f"worker processes left: {pids}"


def test_worker_with_a_queue_subset_starts_only_the_worker_it_needs(
    stack: Stack, tmp_path: Path
) -> None:
    env = clean_env(**stack.env)
    with running(["worker", "--json", "-Q", "leads.deliver"], env, tmp_path) as worker:
        started = json.loads(worker.first_line())
        assert [(w["name"], w["queues"]) for w in started["workers"]] == [("io", ["leads.deliver"])]
        worker.wait_for_stderr(" ready.")
        worker.process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        assert worker.wait(timeout=45) == 0, worker.stderr()
        assert "Warm shutdown" in worker.stderr()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEADPIPE_BROKER_URL", "unix:///tmp/leadpipe-none.sock"),
        ("LEADPIPE_RETRY_BASE_SECONDS", "x"),
    ],
)
def test_a_bare_celery_worker_with_bad_configuration_exits_2_naming_the_variable(
    variable: str, value: str, tmp_path: Path
) -> None:
    # `celery -A tasks worker`, as a process manager may run it, reads the settings first
    env = clean_env(LEADPIPE_HOME=str(tmp_path / "home"), **{variable: value})
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--without-mingle"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
