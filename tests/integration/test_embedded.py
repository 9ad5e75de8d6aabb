"""The embedded Redis (CONTRACT section 2, issue 10 item 6): a generated password kept
in a file only its owner can read, never on the server's command line."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from store.embedded import (
    PASSWORD_FILE,
    embedded_redis_running,
    ensure_embedded_redis,
    stop_embedded_redis,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "home"
    yield where
    stop_embedded_redis(where)


def test_the_embedded_redis_requires_its_generated_password(home: Path) -> None:
    # Given a fresh LEADPIPE_HOME, when a process needs the embedded Redis
    url = ensure_embedded_redis(home)
    # Then the password sits in a 0600 file in a 0700 directory ...
    secret = home / PASSWORD_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    password = secret.read_text().strip()
    assert len(password) >= 40 and f":{password}@" in url
    # ... the URL works, a client without the password is refused
    assert redis.Redis.from_url(url).ping()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).get("x")
    # ... `ps` does not show it, and a second process attaches to the same server
    assert password not in subprocess.run(["ps", "axww"], capture_output=True, text=True).stdout
    assert ensure_embedded_redis(home) == url
    assert embedded_redis_running(home)
    assert stop_embedded_redis(home) and not embedded_redis_running(home)
