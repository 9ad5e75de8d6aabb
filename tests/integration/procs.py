"""`leadpipe` commands as real processes: started in a session of their own, their
output in files, polled with deadlines, and killed whole at the end of a test."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

LEADPIPE = str(Path(sys.executable).with_name("leadpipe"))
#: Variables of the developer's shell that must not leak into a test's command.
_OURS = re.compile(r"^(LEADPIPE_|MYKAARMA_|FLOWER_)")


def clean_env(**values: str) -> dict[str, str]:
    """os.environ without leadpipe's own variables, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not _OURS.match(k)}
    env.update(values)
    return env


@dataclass
class Command:
    """One running `leadpipe ...` process."""

    argv: list[str]
    env: Mapping[str, str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Command:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [LEADPIPE, *self.argv],
                env=dict(self.env),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        return self

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "stdout.txt"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.txt"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def first_line(self, timeout: float = 30) -> str:
        """The first complete line of standard output, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout()
            if "\n" in text:
                return text.split("\n", 1)[0]
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"no output in {timeout}s:\n{self.stderr()}")

    def wait_for_stderr(self, text: str, timeout: float = 30) -> None:
        """Wait until `text` appears on standard error."""
        self._wait_for(text, self.stderr, timeout)

    def wait_for_stdout(self, text: str, timeout: float = 30) -> None:
        """Wait until `text` appears on standard output."""
        self._wait_for(text, self.stdout, timeout)

    def _wait_for(self, text: str, read: Callable[[], str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in read():
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen:\n{self.stdout()}\n{self.stderr()}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole session's process group; harmless once it has exited."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@contextlib.contextmanager
def running(argv: list[str], env: Mapping[str, str], workdir: Path) -> Iterator[Command]:
    command = Command(argv, env, workdir).start()
    try:
        yield command
    finally:
        command.kill()


def alive(pid: int) -> bool:
    """True while a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def group_alive(pgid: int) -> bool:
    """True while any process is left in the process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


def port_answers(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0
