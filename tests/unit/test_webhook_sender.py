"""The notification sender against real HTTP servers on 127.0.0.1: every kind of
answer a partner endpoint can give, classified, and redirects never followed."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from leadpipe.fake_partner import FakePartner
from pipeline.webhook_client import NotSent, Sent, WebhookSender
from pipeline.webhooks import WebhookTarget, encode_body

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
BODY = encode_body({"type": "lead.delivered", "timestamp": "t", "data": {"leadId": "l"}})


def target(url: str) -> WebhookTarget:
    return WebhookTarget(url=url, secret_env="S", secret=SecretStr(SECRET))


class Scripted:
    """A server answering each POST with (status, headers); counts hits per path."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = b"nope"
                self.send_response(outer.status)
                for name, value in outer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sender() -> Iterator[WebhookSender]:
    s = WebhookSender(timeout=0.5)
    yield s
    s.close()


def test_a_2xx_is_sent_and_the_receiver_verifies_it(sender: WebhookSender) -> None:
    with FakePartner(SECRET) as partner:
        outcome = sender.send(target(partner.url), msg_id="msg_1", body=BODY)
        assert outcome == Sent(204)
        [received] = partner.received
        assert received.verified
        assert received.webhook_id == "msg_1"
        assert received.raw == BODY


def test_a_503_with_retry_after_is_not_sent(sender: WebhookSender) -> None:
    server = Scripted(503, {"Retry-After": "7"})
    try:
        outcome = sender.send(target(server.url + "/h"), msg_id="msg_2", body=BODY)
    finally:
        server.close()
    assert isinstance(outcome, NotSent)
    assert outcome.status == 503
    assert outcome.retry_after == 7.0
    assert "HTTP 503" in outcome.error


@pytest.mark.parametrize("status", [400, 401, 404, 410, 429, 500])
def test_every_other_status_is_retried(sender: WebhookSender, status: int) -> None:
    server = Scripted(status)
    try:
        outcome = sender.send(target(server.url + "/h"), msg_id="m", body=BODY)
    finally:
        server.close()
    assert isinstance(outcome, NotSent)
    assert outcome.status == status


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_never_followed(sender: WebhookSender, status: int) -> None:
    server = Scripted(status)
    server.headers = {"Location": server.url + "/elsewhere"}
    try:
        outcome = sender.send(target(server.url + "/h"), msg_id="m", body=BODY)
        hits = dict(server.hits)
    finally:
        server.close()
    assert isinstance(outcome, NotSent)
    assert outcome.status == status
    assert "not followed" in outcome.error
    assert hits == {"/h": 1}  # never a request to /elsewhere


def _raw_server(behaviour: str) -> tuple[socket.socket, threading.Event]:
    """A TCP server that answers garbage or never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    done = threading.Event()

    def serve() -> None:
        listener.settimeout(5)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            if behaviour == "garbage":
                conn.sendall(b"\x00\xffthis is not HTTP at all\r\n\r\n")
            else:  # hang until the test is over
                done.wait(5)

    threading.Thread(target=serve, daemon=True).start()
    return listener, done


@pytest.mark.parametrize("behaviour", ["garbage", "hang"])
def test_garbage_and_hanging_endpoints_are_retried_in_bounded_time(
    sender: WebhookSender, behaviour: str
) -> None:
    listener, done = _raw_server(behaviour)
    port = listener.getsockname()[1]
    started = time.monotonic()
    try:
        outcome = sender.send(target(f"http://127.0.0.1:{port}/h"), msg_id="m", body=BODY)
    finally:
        done.set()
        listener.close()
    assert isinstance(outcome, NotSent)
    assert outcome.status is None
    assert time.monotonic() - started < 3.0
    if behaviour == "hang":
        assert outcome.error.startswith("timeout")


def test_connection_refused_is_retried(sender: WebhookSender) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    outcome = sender.send(target(f"http://127.0.0.1:{port}/h"), msg_id="m", body=BODY)
    assert isinstance(outcome, NotSent)
    assert outcome.error.startswith("connection error")


def test_a_non_loopback_http_url_is_never_contacted(sender: WebhookSender) -> None:
    outcome = sender.send(target("http://hooks.example.invalid/h"), msg_id="m", body=BODY)
    assert isinstance(outcome, NotSent)
    assert outcome.error.startswith("refused")


def test_unverifiable_posts_are_answered_401_by_the_fake_partner() -> None:
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    wrong = WebhookSender(timeout=1)
    with FakePartner(SECRET) as partner:
        outcome = wrong.send(
            WebhookTarget(url=partner.url, secret_env="S", secret=SecretStr(other)),
            msg_id="m",
            body=BODY,
        )
        assert outcome == NotSent(401, "HTTP 401")
        assert partner.verified() == []
    wrong.close()
