"""Store errors are named by kind (the metric label and the log line)."""

from __future__ import annotations

import pytest
import redis

from store.errors import store_error_kind


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (redis.ConnectionError("Connection refused"), "unreachable"),
        (redis.TimeoutError("Timeout reading from socket"), "timeout"),
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), "oom"),
        (
            redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
            "readonly",
        ),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), "misconf"),
        (
            redis.ResponseError(
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            "wrongtype",
        ),
        (redis.exceptions.NoScriptError("No matching script. Please use EVAL."), "noscript"),
        (
            redis.ResponseError(
                "Error running script (call to f_1): @user_script:3: OOM command not allowed"
            ),
            "oom",
        ),
        (redis.ResponseError("something new"), "error_reply"),
        (redis.AuthenticationError("invalid password"), "auth"),
    ],
)
def test_every_kind_of_store_error_has_a_name(exc: Exception, kind: str) -> None:
    assert store_error_kind(exc) == kind
