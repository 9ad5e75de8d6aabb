"""The routing file on disk, reread when it changes (no restart needed).

`RoutingFile` keeps the last good version when a new one is broken; `load_routing`
reads a file once (`leadpipe validate --routing`); `open_routing` picks the source for
`LEADPIPE_ROUTING_FILE`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pipeline.errors import RoutingFileError
from pipeline.routing import schema
from pipeline.routing.table import NO_ROUTES, RoutingTable

logger = logging.getLogger(__name__)

#: `RoutingFile` stats the file at most this often, seconds. One `os.stat` is a few
#: microseconds, but `current()` runs once per lead on up to 32 threads; half a second
#: keeps the syscall off the hot path and still picks up an edit well within a second.
ROUTING_CHECK_INTERVAL_SECONDS = 0.5


def load_routing(path: str | os.PathLike[str]) -> RoutingTable:
    """Read, parse and validate the routing file at `path`."""
    origin = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RoutingFileError(f"cannot read routing file {origin}: {reason}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RoutingFileError(f"routing file {origin} is not UTF-8 text") from None
    return schema.parse_routing(text, origin=origin)


class RoutingSource(Protocol):
    """Anything that hands out the routing table in force right now."""

    def current(self) -> RoutingTable: ...


class StaticRouting:
    """A routing table that never changes (no file configured, or tests)."""

    def __init__(self, table: RoutingTable = NO_ROUTES) -> None:
        self._table = table

    def current(self) -> RoutingTable:
        return self._table


class RoutingFile:
    """The routing file on disk, reread when it changes.

    A change is a new (mtime_ns, size, inode) from one `os.stat`, taken at most every
    `check_interval` seconds (see `ROUTING_CHECK_INTERVAL_SECONDS`; 0 stats on every
    call). Both in-place edits and atomic renames are seen. A broken new version is
    logged once and the last good table stays in force; `RoutingFileError` is raised
    only while no version of the file has ever loaded. Nothing is read before the
    first `current()`; call it at start-up to fail fast. Safe to share between threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval: float = ROUTING_CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._table: RoutingTable | None = None
        self._version: object = None
        self._bad_version: object = None
        self._bad_message = ""
        self._checked_at = -math.inf

    def current(self) -> RoutingTable:
        """The table in force: the newest good version of the file."""
        table = self._table
        if table is not None and self._clock() - self._checked_at < self._check_interval:
            return table
        with self._lock:
            return self._refresh()

    def _refresh(self) -> RoutingTable:
        self._checked_at = self._clock()
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return self._keep_last_good(
                ("unreadable", exc.errno), f"cannot read routing file {self.path}: {reason}"
            )
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._table is not None and version == self._version:
            self._bad_version = None  # back to the good version, e.g. after a brief removal
            return self._table
        if version == self._bad_version:
            return self._keep_last_good(version, self._bad_message)
        try:
            table = load_routing(self.path)
        except RoutingFileError as exc:
            return self._keep_last_good(version, exc.message)
        self._table, self._version, self._bad_version = table, version, None
        logger.info("routing file %s loaded: %r", self.path, table)
        for warning in table.warnings:
            logger.warning("routing file %s: %s", self.path, warning)
        return table

    def _keep_last_good(self, version: object, message: str) -> RoutingTable:
        if version != self._bad_version:
            self._bad_version, self._bad_message = version, message
            if self._table is not None:
                logger.error("%s; keeping the last good version", message)
            else:
                logger.error("%s; no good version loaded yet", message)
        if self._table is None:
            raise RoutingFileError(message)
        return self._table


def open_routing(path: str | os.PathLike[str] | None) -> RoutingSource:
    """The routing source for `LEADPIPE_ROUTING_FILE`: the file, or `NO_ROUTES` when unset."""
    return StaticRouting(NO_ROUTES) if path is None else RoutingFile(path)
