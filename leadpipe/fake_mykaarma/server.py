"""The fake myKaarma's HTTP server: `FakeMyKaarma`.

`FakeMyKaarma` serves ``POST /leads/v2/dealer/{dealerUuid}`` over HTTP/1.1 with
keep-alive (one thread per connection, so slow answers never queue behind each other)
and answers as its `FakeLeadApi` decides (`leadpipe.fake_mykaarma.behaviour`, which
lists the behaviours). It binds loopback addresses only, unless told otherwise with
``allow_remote=True``; it is a test tool, not a server.

Control endpoints (``/_fake/...``) let a test that runs the fake in another process read
and steer it. Bodies are never logged; the access log is off unless ``access_log=True``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from config.urls import is_loopback
from leadpipe.fake_mykaarma.behaviour import FakeLeadApi, LeadRequest, check_lead_body, envelope

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


class FakeMyKaarma(FakeLeadApi):
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
        if not allow_remote and not is_loopback(host):
            raise ValueError(f"refusing to bind {host!r}: a test tool binds loopback only")
        super().__init__(
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            username=username,
            password=password,
            behaviours=behaviours,
            seed=seed,
        )
        self.host, self.port = host, port
        self.access_log = access_log
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
        self._send(status, envelope(status, code, "bad or missing Content-Length"))
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
            self._send(404, envelope(404, "NOT_FOUND", "no such endpoint"))

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
            self._send(404, envelope(404, "NOT_FOUND", "no such endpoint"))

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
            self._send(400, envelope(400, "INVALID_REQUEST", str(exc)))
            return
        self._send(200, config)

    def _lead(self, dealer_uuid: str, raw: bytes) -> None:
        arrived = time.time()
        fake = self.server.fake
        body, body_error = check_lead_body(raw)
        lead_id = None if body is None or body.get("leadId") is None else str(body["leadId"])
        lead = LeadRequest(
            dealer_uuid=dealer_uuid,
            lead_id=lead_id,
            idempotency_key=self.headers.get("Idempotency-Key"),
            auth_ok=fake.check_auth(self.headers.get("Authorization")),
            body_error=body_error,
        )
        behaviour, latency_ms = fake.behaviour_for(dealer_uuid)
        if latency_ms and behaviour.kind != "down":
            time.sleep(latency_ms / 1000)
        answer = fake.answer(lead, behaviour, arrived)
        if answer.status is None:
            self.close_connection = True  # no answer at all: the client sees the connection end
            return
        self._send(answer.status, answer.body, answer.headers)
