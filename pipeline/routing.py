"""Which dealer a lead goes to: the routing TOML of CONTRACT section 5.

    [defaults]          used when nothing more specific matches
    [partners.<id>]     by partner id (exact match)
    [states.<XX>]       by the vehicle's two-letter state, when the partner has no section

Lookup order is partners, then states, then defaults; keys the chosen section does not
set come from `[defaults]`, then from the built-in defaults below. Every section is
validated and merged once, when the file is loaded, so `RoutingTable.route` is two
dictionary look-ups on the hot path.

`RoutingFile` rereads the file when it changes (no restart needed) and keeps the last
good version when a new one is broken.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

from pipeline.errors import RoutingFileError
from pipeline.us_states import US_STATE_CODES

logger = logging.getLogger(__name__)

#: myKaarma's accepted `dealerDetails.source` values.
SOURCES = ("MMC", "BMW_SPARC", "AUTOPOINT")
#: myKaarma's accepted `leadType` values.
LEAD_TYPES = ("RECALL", "SERVICE_DEMAND")

#: Source when neither the section nor `[defaults]` sets one: MMC is myKaarma's own
#: channel; BMW_SPARC and AUTOPOINT are integrations a dealer has to be enrolled in.
DEFAULT_SOURCE = "MMC"
#: Lead type when none is set: a protection-plan lead asks for service, it is no recall.
DEFAULT_LEAD_TYPE = "SERVICE_DEMAND"
#: Services when none are set: what partners send us leads for, a vehicle service contract.
DEFAULT_SERVICE_CODE = "VSC"
DEFAULT_SERVICE_NAME = "Vehicle service contract"

#: `RoutingFile` stats the file at most this often, seconds. One `os.stat` is a few
#: microseconds, but `current()` runs once per lead on up to 32 threads; half a second
#: keeps the syscall off the hot path and still picks up an edit well within a second.
ROUTING_CHECK_INTERVAL_SECONDS = 0.5

_SECTION_KEYS = ("dealer_uuid", "dealer_name", "dealer_code", "source", "lead_type", "services")
_SERVICE_KEYS = ("code", "name", "type", "due_date")
_TOP_LEVEL_KEYS = ("defaults", "partners", "states")
_STATE_NAME = re.compile(r"[A-Za-z]{2}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class Service:
    """One entry of myKaarma's `services` list."""

    code: str
    name: str | None = None
    type: str | None = None
    due_date: str | None = None  # yyyy-MM-dd


#: The services of a route whose section and `[defaults]` set none.
DEFAULT_SERVICES = (Service(code=DEFAULT_SERVICE_CODE, name=DEFAULT_SERVICE_NAME),)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one lead goes and how myKaarma should file it."""

    dealer_uuid: str
    dealer_name: str | None
    dealer_code: str | None
    source: str
    lead_type: str
    services: tuple[Service, ...]
    section: str  # the section that matched: "partners.acme", "states.TX" or "defaults"


class RoutingTable:
    """A validated routing file, every section already merged with `[defaults]`."""

    __slots__ = ("_by_partner", "_by_state", "_default", "origin")

    def __init__(
        self,
        *,
        origin: str,
        by_partner: Mapping[str, Route] | None = None,
        by_state: Mapping[str, Route] | None = None,
        default: Route | None = None,
    ) -> None:
        self.origin = origin
        self._by_partner = dict(by_partner or {})
        self._by_state = dict(by_state or {})
        self._default = default

    @classmethod
    def from_toml_text(cls, text: str, *, origin: str = "<string>") -> RoutingTable:
        """Parse and validate a routing file; `RoutingFileError` lists every problem."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RoutingFileError(f"routing file {origin} is not valid TOML: {exc}") from None
        return _build_table(document, origin)

    def route(self, partner: str | None, state: str | None) -> Route | None:
        """The route for a lead, or None when no section gives it a dealer (unroutable)."""
        if partner is not None:
            by_partner = self._by_partner.get(partner)
            if by_partner is not None:
                return by_partner
        if state is not None:
            by_state = self._by_state.get(state.upper())
            if by_state is not None:
                return by_state
        return self._default

    @property
    def is_empty(self) -> bool:
        """True when every lead is unroutable."""
        return not (self._by_partner or self._by_state or self._default)

    def __repr__(self) -> str:
        return (
            f"RoutingTable(origin={self.origin!r}, partners={sorted(self._by_partner)}, "
            f"states={sorted(self._by_state)}, defaults={self._default is not None})"
        )


#: No routing file configured (`LEADPIPE_ROUTING_FILE` unset): every lead is unroutable.
NO_ROUTES = RoutingTable(origin="<no routing file>")


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
    return RoutingTable.from_toml_text(text, origin=origin)


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


# --- validation -------------------------------------------------------------------------


class _Problems:
    """Collects every problem of one file so the operator fixes them in one pass."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise RoutingFileError(f"invalid routing file {self.origin}: " + "; ".join(self.items))


def _key(name: str) -> str:
    """A table name as TOML would spell it in a dotted key."""
    return name if _BARE_KEY.fullmatch(name) else '"' + name.replace('"', '\\"') + '"'


def _build_table(document: Mapping[str, object], origin: str) -> RoutingTable:
    problems = _Problems(origin)
    for name in document:
        if name not in _TOP_LEVEL_KEYS:
            problems.add(_key(name), "unknown key (expected defaults, partners or states)")

    defaults: dict[str, object] = {}
    if "defaults" in document:
        defaults = _section(document["defaults"], "defaults", problems)

    partners: dict[str, dict[str, object]] = {}
    for name, raw in _tables(document, "partners", problems).items():
        partners[name] = _section(raw, f"partners.{_key(name)}", problems)

    states: dict[str, tuple[str, dict[str, object]]] = {}
    for name, raw in _tables(document, "states", problems).items():
        where = f"states.{_key(name)}"
        if not _STATE_NAME.fullmatch(name):
            problems.add(where, "a state section must be named by a two-letter state code")
            continue
        code = name.upper()
        if code not in US_STATE_CODES:
            problems.add(where, f"{code} is not a US state code, so no lead would match it")
            continue
        if code in states:
            problems.add(where, f"duplicates states.{states[code][0]}")
            continue
        states[code] = (name, _section(raw, where, problems))

    if "dealer_uuid" not in defaults:
        for where, section in [
            *((f"partners.{_key(n)}", s) for n, s in partners.items()),
            *((f"states.{n}", s) for n, (_, s) in states.items()),
        ]:
            if "dealer_uuid" not in section:
                problems.add(where, "no dealer_uuid here nor in [defaults]: it routes nowhere")
    problems.raise_if_any()

    return RoutingTable(
        origin=origin,
        by_partner={n: _route(s, defaults, f"partners.{_key(n)}") for n, s in partners.items()},
        by_state={c: _route(s, defaults, f"states.{c}") for c, (_, s) in states.items()},
        default=_route({}, defaults, "defaults") if "dealer_uuid" in defaults else None,
    )


def _route(section: Mapping[str, object], defaults: Mapping[str, object], where: str) -> Route:
    merged = {**defaults, **section}

    def text(key: str) -> str | None:
        value = merged.get(key)
        return value if isinstance(value, str) else None

    services = merged.get("services")
    return Route(
        dealer_uuid=text("dealer_uuid") or "",
        dealer_name=text("dealer_name"),
        dealer_code=text("dealer_code"),
        source=text("source") or DEFAULT_SOURCE,
        lead_type=text("lead_type") or DEFAULT_LEAD_TYPE,
        services=services if isinstance(services, tuple) else DEFAULT_SERVICES,
        section=where,
    )


def _tables(
    document: Mapping[str, object], name: str, problems: _Problems
) -> dict[str, Mapping[str, object]]:
    """The sub-tables of `[partners]` or `[states]`, each checked to be a table."""
    raw = document.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(name, f"must be a table of [{name}.<name>] sections")
        return {}
    tables: dict[str, Mapping[str, object]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            tables[key] = value
        else:
            problems.add(f"{name}.{_key(key)}", "must be a table (a [section]), not a value")
    return tables


def _section(raw: object, where: str, problems: _Problems) -> dict[str, object]:
    """The validated keys one section sets (the keys it leaves out are not in the result)."""
    if not isinstance(raw, dict):
        problems.add(where, "must be a table (a [section]), not a value")
        return {}
    values: dict[str, object] = {}
    for key, value in raw.items():
        path = f"{where}.{_key(key)}"
        if key not in _SECTION_KEYS:
            problems.add(path, "unknown key (expected one of " + ", ".join(_SECTION_KEYS) + ")")
        elif key == "services":
            services = _services(value, path, problems)
            if services is not None:
                values[key] = services
        elif not isinstance(value, str) or not value.strip():
            problems.add(path, f"must be a non-empty string, got {_show(value)}")
        elif key == "source" and value not in SOURCES:
            problems.add(path, f"must be one of {', '.join(SOURCES)}, got {value!r}")
        elif key == "lead_type" and value not in LEAD_TYPES:
            problems.add(path, f"must be one of {', '.join(LEAD_TYPES)}, got {value!r}")
        else:
            values[key] = value
    return values


def _services(raw: object, where: str, problems: _Problems) -> tuple[Service, ...] | None:
    if not isinstance(raw, list):
        problems.add(
            where, f"must be an array of tables such as [{{ code = 'VSC' }}], got {_show(raw)}"
        )
        return None
    if not raw:
        problems.add(where, "must list at least one service (myKaarma requires one)")
        return None
    services: list[Service] = []
    for index, item in enumerate(raw):
        service = _service(item, f"{where}[{index}]", problems)
        if service is not None:
            services.append(service)
    return tuple(services) if len(services) == len(raw) else None


def _service(raw: object, where: str, problems: _Problems) -> Service | None:
    if not isinstance(raw, dict):
        problems.add(where, f"must be a table such as {{ code = 'VSC' }}, got {_show(raw)}")
        return None
    fields: dict[str, str] = {}
    ok = True
    for key, value in raw.items():
        path = f"{where}.{_key(key)}"
        if key not in _SERVICE_KEYS:
            problems.add(path, "unknown key (expected one of " + ", ".join(_SERVICE_KEYS) + ")")
            ok = False
        elif key == "due_date" and type(value) is date:
            fields[key] = value.isoformat()  # a TOML local date: due_date = 2025-01-31
        elif not isinstance(value, str) or not value.strip():
            problems.add(path, f"must be a non-empty string, got {_show(value)}")
            ok = False
        elif key == "due_date" and not _is_iso_date(value):
            problems.add(path, f"must be a date as yyyy-mm-dd, got {value!r}")
            ok = False
        else:
            fields[key] = value
    if "code" not in raw:
        problems.add(where, "missing code (myKaarma requires a service code)")
        ok = False
    if not ok:
        return None
    return Service(
        code=fields["code"],
        name=fields.get("name"),
        type=fields.get("type"),
        due_date=fields.get("due_date"),
    )


def _is_iso_date(value: str) -> bool:
    if not _ISO_DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _show(value: object) -> str:
    """A value for an error message: its TOML type, and the value when short."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown}" if len(shown) <= 40 else kind
