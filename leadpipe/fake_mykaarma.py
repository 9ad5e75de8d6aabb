"""A local stand-in for myKaarma's lead API, for the demo, tests and the benchmark.

`FakeMyKaarma` serves ``POST /leads/v2/dealer/{dealerUuid}`` over HTTP/1.1 with
keep-alive (one thread per connection, so slow answers never queue behind each other)
and records every lead request it saw. It binds loopback addresses only, unless told
otherwise with ``allow_remote=True``; it is a test tool, not a server.

A lead request goes through these steps, in order::

    behaviour "down"  -> connection closed, no answer, nothing stored
    latency           -> sleep latency_ms (or the dealer's slow:<ms>)
    fail_rate         -> 503, at random (seedable)
    basic auth        -> 401 when username/password are set and do not match
    body              -> 400 when not a JSON object, or customer, vehicle, dealerDetails,
                         services (non-empty), status == "NEW" or leadType is missing
    behaviour         -> the dealer's answer (below); success stores the lead

Per-dealer behaviours (``behaviours={dealerUuid: spec}``; the key ``*`` applies to every
dealer without its own entry). A spec is one outcome, optionally joined by a comma with
``slow:<ms>``, e.g. ``"flaky:2,slow:50"``:

    ok                      200 with the success envelope (the default)
    reject                  400, error code INVALID_REQUEST
    status:<code>           always that status (200-599); a 2xx stores the lead
    flaky:<n>               the first n requests per lead answer 503, then success
    retry-after:<s>, 429:<s>  the first request per lead answers 429 with
                            ``Retry-After: <s>`` (seconds, may be fractional), then success
    drop-after-store        stores the lead, then closes the connection without an answer
                            (the ambiguous case); the same lead again answers 200 with
                            isNewCreated false
    down                    closes the connection at once, storing nothing
    slow:<ms>               this dealer's latency instead of latency_ms

A lead is identified by its ``Idempotency-Key`` header, else its body's ``leadId``,
within one dealer: a lead already stored answers 200 with the same prospectUuid and
``isNewCreated: false``. Control endpoints (``/_fake/...``) let a test that runs the fake
in another process read and steer it. Bodies are never logged; the access log is off
unless ``access_log=True``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import random
import socket
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

#: Port of `leadpipe fake-mykaarma` when none is given (one unlikely to be taken).
DEFAULT_PORT = 8099
#: Bigger bodies answer 413 unread: myKaarma leads are a few kB.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: Seconds an idle keep-alive connection is kept open before its thread lets it go.
KEEPALIVE_IDLE_SECONDS = 30.0
#: listen() backlog: the stdlib's 5 makes hundreds of concurrent clients wait for SYN retries.
LISTEN_BACKLOG = 1024
#: How often the serving loop checks for stop(), in seconds (the stdlib's 0.5 slows tests).
SHUTDOWN_POLL_SECONDS = 0.02
#: Path of the lead endpoint, followed by the dealerUuid.
LEAD_PATH_PREFIX = "/leads/v2/dealer/"
#: Status recorded for a request answered by closing the connection.
DROPPED = "dropped"

_OUTCOMES = {"ok", "reject", "status", "flaky", "retry-after", "drop-after-store", "down"}
_REQUIRED_OBJECTS = ("customer", "vehicle", "dealerDetails")


class BehaviourError(ValueError):
    """A behaviour spec that does not parse."""


@dataclass(frozen=True)
class Behaviour:
    """One dealer's parsed behaviour: an outcome, its argument, an optional latency."""

    kind: str = "ok"
    arg: float = 0.0
    latency_ms: float | None = None


def parse_behaviour(spec: str) -> Behaviour:
    """Parse a behaviour spec such as ``"flaky:2,slow:50"`` (see the module docstring)."""
    kind, arg, latency = "ok", 0.0, None
    outcomes = 0
    for term in (t.strip() for t in spec.split(",")):
        name, _, value = term.partition(":")
        name = "retry-after" if name == "429" else name
        if name == "slow":
            latency = _number(term, value, minimum=0)
            continue
        if name not in _OUTCOMES or bool(value) != (name in {"status", "flaky", "retry-after"}):
            raise BehaviourError(f"unknown behaviour {term!r}")
        outcomes += 1
        kind = name
        if name == "status":
            arg = _number(term, value, minimum=200, maximum=599, integer=True)
        elif name == "flaky":
            arg = _number(term, value, minimum=0, integer=True)
        elif name == "retry-after":
            arg = _number(term, value, minimum=0)
    if outcomes > 1:
        raise BehaviourError(f"{spec!r} has more than one outcome; only slow:<ms> combines")
    return Behaviour(kind, arg, latency)


def _number(
    term: str, value: str, *, minimum: float, maximum: float = math.inf, integer: bool = False
) -> float:
    try:
        number = float(int(value)) if integer else float(value)
    except ValueError:
        raise BehaviourError(f"{term!r}: {value!r} is not a number") from None
    if not (math.isfinite(number) and minimum <= number <= maximum):
        raise BehaviourError(f"{term!r}: {value!r} is out of range")
    return number


def _check_latency(value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"latency_ms must be a finite number >= 0, not {value!r}")
    return float(value)


def _check_fail_rate(value: float) -> float:
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"fail_rate must be between 0 and 1, not {value!r}")
    return float(value)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _envelope(status: int, code: str | None = None, description: str = "") -> dict[str, Any]:
    error = None if code is None else {"code": code, "description": description, "metadata": None}
    return {"statusCode": status, "error": error, "warnings": []}


@dataclass
class _Answer:
    status: int | None  # None: close the connection without answering
    body: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    stored: bool = False
    created: bool = False


@dataclass
class _LeadRequest:
    dealer_uuid: str
    lead_id: str | None
    idempotency_key: str | None
    auth_ok: bool
    body_error: str | None

    @property
    def key(self) -> str | None:
        return self.idempotency_key or self.lead_id


class FakeMyKaarma:
    """The fake lead API: configure, `start()`, point a client at `.url`, inspect, `stop()`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        username: str | None = None,
        password: str | None = None,
        behaviours: dict[str, str] | None = None,
        seed: int | None = None,
        allow_remote: bool = False,
        access_log: bool = False,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise ValueError(f"refusing to bind {host!r}: a test tool binds loopback only")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.host, self.port = host, port
        self.access_log = access_log
        self._credentials = None if username is None else f"{username}:{password}".encode()
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)
        self._latency_ms = _check_latency(latency_ms)
        self._fail_rate = _check_fail_rate(fail_rate)
        self._behaviour_specs: dict[str, str] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self.configure(behaviours=behaviours or {})
        self._records: list[dict[str, Any]] = []
        self._prospects: dict[tuple[str, str], str] = {}
        self._attempts: dict[tuple[str, str | None], int] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> FakeMyKaarma:
        """Bind and serve in a background thread; returns self."""
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=f"fake-mykaarma:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeMyKaarma:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://<host>:<port>``, the API root to use as MYKAARMA_BASE_URL."""
        host = self._server.server_name if self._server else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    # -- configuration and inspection -----------------------------------------------

    def configure(
        self,
        *,
        latency_ms: float | None = None,
        fail_rate: float | None = None,
        behaviours: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Change settings at run time (None leaves one as it is); returns the config."""
        parsed = None
        if behaviours is not None:
            if not isinstance(behaviours, dict):
                raise ValueError("behaviours must map dealerUuid to a spec")
            parsed = {str(d): parse_behaviour(str(s)) for d, s in behaviours.items()}
        latency = None if latency_ms is None else _check_latency(latency_ms)
        rate = None if fail_rate is None else _check_fail_rate(fail_rate)
        with self._lock:
            if latency is not None:
                self._latency_ms = latency
            if rate is not None:
                self._fail_rate = rate
            if parsed is not None and behaviours is not None:
                self._behaviours = parsed
                self._behaviour_specs = {str(d): str(s) for d, s in behaviours.items()}
            return self._config()

    def _config(self) -> dict[str, Any]:
        return {
            "latency_ms": self._latency_ms,
            "fail_rate": self._fail_rate,
            "behaviours": dict(self._behaviour_specs),
        }

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every lead request seen: time, dealerUuid, leadId, idempotencyKey, authOk,
        status (an int, or "dropped"), stored, created."""
        with self._lock:
            return [dict(r) for r in self._records]

    def stored_lead_ids(self) -> dict[str, int]:
        """leadId -> how many times it was stored or acknowledged (2xx, drop-after-store)."""
        counts: dict[str, int] = {}
        with self._lock:
            for record in self._records:
                if record["stored"]:
                    lead = record["leadId"] or record["idempotencyKey"] or ""
                    counts[lead] = counts.get(lead, 0) + 1
        return counts

    def stats(self) -> dict[str, Any]:
        """``{requests, by_status, stored: {leadId: count}}``."""
        by_status: dict[str, int] = {}
        with self._lock:
            total = len(self._records)
            for record in self._records:
                by_status[str(record["status"])] = by_status.get(str(record["status"]), 0) + 1
        return {"requests": total, "by_status": by_status, "stored": self.stored_lead_ids()}

    def reset(self) -> None:
        """Forget every request, stored lead and per-lead counter (configuration stays)."""
        with self._lock:
            self._records.clear()
            self._prospects.clear()
            self._attempts.clear()
            self._rng = random.Random(self._seed)

    # -- answering ------------------------------------------------------------------

    def _behaviour(self, dealer_uuid: str) -> tuple[Behaviour, float]:
        with self._lock:
            behaviour = self._behaviours.get(dealer_uuid) or self._behaviours.get("*")
            behaviour = behaviour or Behaviour()
            latency = self._latency_ms if behaviour.latency_ms is None else behaviour.latency_ms
        return behaviour, latency

    def _check_auth(self, header: str | None) -> bool:
        if self._credentials is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return scheme.lower() == "basic" and hmac.compare_digest(given, self._credentials)

    def _answer(self, lead: _LeadRequest, behaviour: Behaviour, arrived: float) -> _Answer:
        with self._lock:
            answer = self._decide(lead, behaviour)
            self._records.append(
                {
                    "time": arrived,
                    "dealerUuid": lead.dealer_uuid,
                    "leadId": lead.lead_id,
                    "idempotencyKey": lead.idempotency_key,
                    "authOk": lead.auth_ok,
                    "status": DROPPED if answer.status is None else answer.status,
                    "stored": answer.stored,
                    "created": answer.created,
                }
            )
        return answer

    def _decide(self, lead: _LeadRequest, behaviour: Behaviour) -> _Answer:
        """The answer to one lead request; called with the lock held."""
        kind = behaviour.kind
        if kind == "down":
            return _Answer(None)
        if self._fail_rate and self._rng.random() < self._fail_rate:
            return _Answer(503, _envelope(503, "SERVICE_UNAVAILABLE", "try again later"))
        if not lead.auth_ok:
            return _Answer(
                401,
                _envelope(401, "UNAUTHORIZED", "bad or missing basic auth credentials"),
                (("WWW-Authenticate", 'Basic realm="myKaarma"'),),
            )
        if lead.body_error:
            return _Answer(400, _envelope(400, "INVALID_REQUEST", lead.body_error))
        if kind == "reject":
            return _Answer(400, _envelope(400, "INVALID_REQUEST", "lead rejected by dealer"))
        if kind == "status" and not 200 <= behaviour.arg < 300:
            code = int(behaviour.arg)
            name = HTTPStatus(code).name if code in set(HTTPStatus) else "ERROR"
            return _Answer(code, _envelope(code, name, f"status {code} by configuration"))
        if kind in {"flaky", "retry-after"}:
            attempt = self._attempts.get((lead.dealer_uuid, lead.key), 0) + 1
            self._attempts[(lead.dealer_uuid, lead.key)] = attempt
            if kind == "flaky" and attempt <= behaviour.arg:
                return _Answer(503, _envelope(503, "SERVICE_UNAVAILABLE", f"flaky {attempt}"))
            if kind == "retry-after" and attempt == 1:
                body = _envelope(429, "TOO_MANY_REQUESTS", "slow down")
                seconds = behaviour.arg
                header = str(int(seconds)) if seconds.is_integer() else str(seconds)
                return _Answer(429, body, (("Retry-After", header),))
        prospect, created = self._store(lead)
        if kind == "drop-after-store" and created:
            return _Answer(None, stored=True, created=True)
        status = int(behaviour.arg) if kind == "status" else 200
        body = {**_envelope(status), "isNewCreated": created, "prospectUuid": prospect}
        return _Answer(status, None if status == 204 else body, stored=True, created=created)

    def _store(self, lead: _LeadRequest) -> tuple[str, bool]:
        """The lead's prospectUuid, and whether it was created now; lock held."""
        key = lead.key
        if key is not None and (lead.dealer_uuid, key) in self._prospects:
            return self._prospects[(lead.dealer_uuid, key)], False
        prospect = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        if key is not None:
            self._prospects[(lead.dealer_uuid, key)] = prospect
        return prospect, True


def check_lead_body(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed body and a light check's complaint (None when it passes)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, "body is not JSON"
    if not isinstance(body, dict):
        return None, "body is not a JSON object"
    missing = [name for name in _REQUIRED_OBJECTS if not isinstance(body.get(name), dict)]
    if not (isinstance(body.get("services"), list) and body["services"]):
        missing.append("services")
    if body.get("status") != "NEW":
        missing.append("status (must be NEW)")
    if not body.get("leadType"):
        missing.append("leadType")
    return body, ("missing or invalid: " + ", ".join(missing)) if missing else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes the connections itself
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], fake: FakeMyKaarma) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup we do not need.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer is routine here, not a traceback on stderr.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a pooled requests.Session reuses connections
    server_version = "FakeMyKaarma/1.0"
    disable_nagle_algorithm = True
    timeout = KEEPALIVE_IDLE_SECONDS
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.access_log:
            logger.info("%s %s", self.address_string(), format % args)

    def _send(
        self, status: int, payload: object | None, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _read_body(self) -> bytes | None:
        """The request body; None after answering an unreadable one (and closing)."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            status, code = 411, "LENGTH_REQUIRED"
        elif length > MAX_BODY_BYTES:
            status, code = 413, "PAYLOAD_TOO_LARGE"
        elif length < 0:
            status, code = 400, "INVALID_REQUEST"
        else:
            return self.rfile.read(length)
        self.close_connection = True  # the unread body would be taken for the next request
        self._send(status, _envelope(status, code, "bad or missing Content-Length"))
        return None

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self._read_body()
        if raw is None:
            return
        fake = self.server.fake
        if path == "/_fake/reset":
            fake.reset()
            self._send(200, {"reset": True})
        elif path == "/_fake/config":
            self._configure(raw)
        elif path.startswith(LEAD_PATH_PREFIX) and "/" not in path[len(LEAD_PATH_PREFIX) :]:
            self._lead(unquote(path[len(LEAD_PATH_PREFIX) :]), raw)
        else:
            self._send(404, _envelope(404, "NOT_FOUND", "no such endpoint"))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        fake = self.server.fake
        if path == "/_fake/requests":
            self._send(200, fake.requests)
        elif path == "/_fake/stats":
            self._send(200, fake.stats())
        elif path == "/_fake/health":
            self._send(200, {"status": "ok", "url": fake.url})
        else:
            self._send(404, _envelope(404, "NOT_FOUND", "no such endpoint"))

    def _configure(self, raw: bytes) -> None:
        try:
            settings = json.loads(raw or b"{}")
            if not isinstance(settings, dict) or set(settings) - {
                "latency_ms",
                "fail_rate",
                "behaviours",
            }:
                raise ValueError("expected an object of latency_ms, fail_rate, behaviours")
            config = self.server.fake.configure(**settings)
        except (ValueError, TypeError) as exc:
            self._send(400, _envelope(400, "INVALID_REQUEST", str(exc)))
            return
        self._send(200, config)

    def _lead(self, dealer_uuid: str, raw: bytes) -> None:
        arrived = time.time()
        fake = self.server.fake
        body, body_error = check_lead_body(raw)
        lead_id = None if body is None or body.get("leadId") is None else str(body["leadId"])
        lead = _LeadRequest(
            dealer_uuid=dealer_uuid,
            lead_id=lead_id,
            idempotency_key=self.headers.get("Idempotency-Key"),
            auth_ok=fake._check_auth(self.headers.get("Authorization")),
            body_error=body_error,
        )
        behaviour, latency_ms = fake._behaviour(dealer_uuid)
        if latency_ms and behaviour.kind != "down":
            time.sleep(latency_ms / 1000)
        answer = fake._answer(lead, behaviour, arrived)
        if answer.status is None:
            self.close_connection = True  # no answer at all: the client sees the connection end
            return
        self._send(answer.status, answer.body, answer.headers)
