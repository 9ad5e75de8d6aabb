"""Starting and stopping real Celery worker processes: for `leadpipe worker`, the
demo, the benchmark and the tests alike (one place for how a worker is launched)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import NOTIFY_CONCURRENCY
from tasks.queues import CPU_QUEUES, IO_QUEUES, NOTIFY_QUEUES

#: How long a worker may take to say "ready", seconds.
READY_TIMEOUT_SECONDS = 60.0
#: Threads on the CPU-bound queues: enough to overlap Redis round trips; more only
#: contend for the GIL with the consumer thread (`make bench`: 2 beat 4 by 4-20%).
CPU_THREADS = 2


@dataclass
class WorkerSpec:
    """One `celery worker` process: which queues, which pool, how many slots."""

    name: str
    queues: Sequence[str]
    pool: str = "threads"
    concurrency: int = 8
    loglevel: str = "INFO"
    extra_args: Sequence[str] = ()

    def argv(self, logfile: Path | None = None) -> list[str]:
        args = [
            sys.executable, "-m", "celery", "-A", "tasks", "worker",
            "-n", f"{self.name}@%h",
            "-Q", ",".join(self.queues),
            "-P", self.pool,
            "-c", str(self.concurrency),
            "--loglevel", self.loglevel,
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        if logfile is not None:
            args += ["--logfile", str(logfile)]
        return args + list(self.extra_args)


def default_specs(
    deliver_concurrency: int,
    loglevel: str = "INFO",
    notify_concurrency: int = NOTIFY_CONCURRENCY,
) -> list[WorkerSpec]:
    """The sensible pools per queue: validation is CPU-bound and short, delivery waits
    on myKaarma, notifications wait on partners. Two processes use both cores; the
    delivery threads hide the latency; notifications have a process and threads of
    their own, so a slow partner endpoint never holds a thread a lead needs."""
    return [
        WorkerSpec("cpu", CPU_QUEUES, "threads", CPU_THREADS, loglevel),
        WorkerSpec("io", IO_QUEUES, "threads", deliver_concurrency, loglevel),
        WorkerSpec("notify", NOTIFY_QUEUES, "threads", notify_concurrency, loglevel),
    ]


@dataclass
class WorkerProcess:
    """A running worker, in its own process group so it can be killed whole."""

    spec: WorkerSpec
    env: Mapping[str, str]
    logfile: Path
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> WorkerProcess:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.spec.argv(self.logfile),
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.logfile.with_suffix(".stderr"), "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_text(self) -> str:
        text = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
        err = self.logfile.with_suffix(".stderr")
        return text + (err.read_text(errors="replace") if err.exists() else "")

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> WorkerProcess:
        """Block until the worker logs that it is ready; raise with its log if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logfile.exists():
                with open(self.logfile, errors="replace") as fh:
                    fh.seek(self._offset)
                    if " ready." in fh.read():
                        return self
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"worker {self.spec.name} exited with {self.process.returncode}:\n"
                    + self.log_text()[-4000:]
                )
            time.sleep(0.05)
        raise TimeoutError(f"worker {self.spec.name} not ready in {timeout}s")

    def signal(self, signum: int) -> None:
        """Send `signum` to the worker's whole process group."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Warm shutdown (SIGTERM); SIGKILL the group if it does not finish in time."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed host would."""
        if self.process is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
