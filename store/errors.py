"""Naming what went wrong with Redis: the `kind` of a store error, for the log line and
the `leadpipe_store_errors_total{kind}` label (tasks/store_errors.py), and for the
operator commands' one-line report."""

from __future__ import annotations

import redis

#: Error-reply codes Redis puts first in the message, named as a kind (lower case).
_REPLY_CODES = (
    "OOM",
    "READONLY",
    "MISCONF",
    "WRONGTYPE",
    "NOSCRIPT",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "NOPERM",
    "NOAUTH",
    "EXECABORT",
    "CROSSSLOT",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


#: redis-py's own classes for some error replies (it strips the code from the text).
_REPLY_CLASSES: tuple[tuple[type[Exception], str], ...] = (
    (redis.exceptions.OutOfMemoryError, "oom"),
    (redis.exceptions.ReadOnlyError, "readonly"),
    (redis.exceptions.NoScriptError, "noscript"),
    (redis.exceptions.BusyLoadingError, "loading"),
    (redis.exceptions.ExecAbortError, "execabort"),
    (redis.exceptions.NoPermissionError, "noperm"),
)


def store_error_kind(exc: BaseException) -> str:
    """A short, stable name for what went wrong with Redis (a metric label)."""
    for cls, kind in _REPLY_CLASSES:
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, redis.AuthenticationError):
        return "auth"
    if isinstance(exc, redis.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.ConnectionError):
        return "unreachable"
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        words = text.split()
        if words and words[0] in _REPLY_CODES:
            return words[0].lower()
        for code in _REPLY_CODES:  # an error raised inside a Lua script names it later
            if f"{code} " in text or text.endswith(code):
                return code.lower()
        return "error_reply"
    return type(exc).__name__.lower()
