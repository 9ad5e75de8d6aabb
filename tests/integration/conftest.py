"""The integration stack: one per test module (a worker takes ~2 s to start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from leadpipe.fake_mykaarma import FakeMyKaarma
from tests.conftest import flush_owned_database
from tests.stack import BEHAVIOURS, PASSWORD, ROUTING, USERNAME, Stack, make_env


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    flush_owned_database(redis_url)
    workdir: Path = tmp_path_factory.mktemp("stack")
    routing = workdir / "routing.toml"
    routing.write_text(ROUTING)
    fake = FakeMyKaarma(username=USERNAME, password=PASSWORD, behaviours=dict(BEHAVIOURS)).start()
    s = Stack(redis_url, workdir, fake, make_env(redis_url, fake.url, routing))
    try:
        yield s
    finally:
        s.stop()
        fake.stop()
        flush_owned_database(redis_url)
