"""A partner's webhook receiver, for the demo and the tests: it verifies every
notification with the `standardwebhooks` package, as a partner's code would, and
keeps what it received.

    POST <any path>   verify the Standard Webhooks signature; answer 204 (or 503 to the
                      first `fail_first` tries of each webhook-id; 401 when the
                      signature does not verify)
    GET  /events      every POST received, oldest first, as JSON

It binds loopback addresses only. A `received` entry holds the webhook-id, whether it
verified, the answer given, and the parsed body (which carries no customer data).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from config.urls import is_loopback
from leadpipe.fake_mykaarma.server import SHUTDOWN_POLL_SECONDS
from pipeline.webhooks import HEADER_ID

#: Port `leadpipe fake-partner` binds when none is given.
DEFAULT_PORT = 8099
#: Largest body read, bytes: an event is a few hundred.
MAX_BODY_BYTES = 256 * 1024


@dataclass
class Received:
    """One POST as the receiver saw it."""

    webhook_id: str | None
    verified: bool
    answered: int
    body: Any
    raw: bytes = field(repr=False)
    headers: dict[str, str] = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "webhookId": self.webhook_id,
            "verified": self.verified,
            "answered": self.answered,
            "body": self.body,
        }


class FakePartner:
    """A webhook receiver on a background thread; `start()`, `url`, `received`, `stop()`."""

    def __init__(
        self,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fail_first: int = 0,
        fail_status: int = 503,
        on_receive: Callable[[Received], None] | None = None,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"refusing to bind {host!r}: a test tool binds loopback only")
        self._verifier = Webhook(secret)
        self.host = host
        self.port = port
        self.fail_first = fail_first
        self.fail_status = fail_status
        self._on_receive = on_receive
        self.received: list[Received] = []
        self._tries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hooks"

    def start(self) -> FakePartner:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="fake-partner",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakePartner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clear(self) -> None:
        """Forget what was received (the bench does between runs)."""
        with self._lock:
            self.received.clear()
            self._tries.clear()

    def verified(self) -> list[Received]:
        """POSTs whose signature verified, in arrival order."""
        with self._lock:
            return [r for r in self.received if r.verified]

    def accepted(self) -> list[Received]:
        """Verified POSTs answered 2xx: the events a partner has processed."""
        return [r for r in self.verified() if 200 <= r.answered < 300]

    def receive(self, raw: bytes, headers: dict[str, str]) -> int:
        """Verify and record one POST; the status to answer."""
        try:
            body = self._verifier.verify(raw, headers)
            verified = True
        except (WebhookVerificationError, ValueError):
            body, verified = None, False
        webhook_id = {k.lower(): v for k, v in headers.items()}.get(HEADER_ID)
        with self._lock:
            if not verified:
                status = HTTPStatus.UNAUTHORIZED.value
            else:
                self._tries[webhook_id or ""] += 1
                failing = self._tries[webhook_id or ""] <= self.fail_first
                status = self.fail_status if failing else HTTPStatus.NO_CONTENT.value
            entry = Received(webhook_id, verified, status, body, raw, headers)
            self.received.append(entry)
        if self._on_receive is not None:
            self._on_receive(entry)
        return status

    def events_json(self) -> bytes:
        with self._lock:
            return json.dumps([r.as_json() for r in self.received]).encode()


def _handler(partner: FakePartner) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, MAX_BODY_BYTES))
            status = partner.receive(raw, dict(self.headers.items()))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            body = partner.events_json() if self.path.startswith("/events") else b"[]"
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests and the demo print what matters

    return Handler
