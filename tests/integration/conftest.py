"""The integration stack: one per test module (a worker takes ~2 s to start)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import redis

from leadpipe.fake_mykaarma import FakeMyKaarma
from store.keys import Keys
from store.records import LeadStore
from tests.conftest import flush_owned_database
from tests.stack import BEHAVIOURS, PASSWORD, ROUTING, USERNAME, Stack, make_env


@contextlib.contextmanager
def running_stack(
    redis_url: str,
    workdir: Path,
    routing_text: str = ROUTING,
    *,
    behaviours: Mapping[str, str] | None = BEHAVIOURS,
    **env: str,
) -> Iterator[Stack]:
    """A Stack with its own routing file and fake myKaarma, on the session's database:
    flushed before and after, the fake and every worker stopped at the end."""
    flush_owned_database(redis_url)
    routing = workdir / "routing.toml"
    routing.write_text(routing_text)
    fake = FakeMyKaarma(
        username=USERNAME, password=PASSWORD, behaviours=dict(behaviours) if behaviours else None
    ).start()
    s = Stack(redis_url, workdir, fake, make_env(redis_url, fake.url, routing, **env))
    try:
        yield s
    finally:
        s.stop()
        fake.stop()
        flush_owned_database(redis_url)


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(redis_url, tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture
def store(redis_url: str) -> Iterator[LeadStore]:
    """A LeadStore on the session's Redis under a key prefix of its own (no worker)."""
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix=f"t-{uuid.uuid4().hex[:8]}")
    yield LeadStore(client, keys)
    for key in client.scan_iter(f"{keys.prefix}:*"):
        client.delete(key)
    client.close()
