"""The myKaarma client against a real HTTP server on 127.0.0.1 (pytest-httpserver).

No mocked `requests`: every outcome comes from bytes on a socket.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pipeline.breaker import Answer
from pipeline.client import (
    Delivered,
    DeliveryOutcome,
    MyKaarmaClient,
    RejectedByMyKaarma,
    TransientFailure,
    breaker_answer,
    classify,
    parse_retry_after,
)
from pipeline.http_session import USER_AGENT

USERNAME = "svc-user"
PASSWORD = "s3cr3t-Pa55word"
TOKEN = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
LEAD_ID = "0b6f7c8e-1111-4222-8333-444455556666"
DEALER = "d-0001"
PATH = f"/leads/v2/dealer/{DEALER}"
BODY = {
    "customer": {"firstName": "Ada", "lastName": "Lovelace"},
    "vehicle": {"vin": "1HGCM82633A004352", "estimatedMileage": "42000"},
    "dealerDetails": {"source": "MMC"},
    "services": [{"code": "VSC"}],
    "status": "NEW",
    "leadId": LEAD_ID,
    "leadType": "SERVICE_DEMAND",
}
ENVELOPE_ERROR = {"code": "INVALID_VIN", "description": "vin is not valid", "metadata": {"f": 1}}


@pytest.fixture
def client(httpserver: HTTPServer) -> Iterator[MyKaarmaClient]:
    with MyKaarmaClient(
        httpserver.url_for("/"), USERNAME, SecretStr(PASSWORD), timeout=2.0, pool_size=4
    ) as instance:
        yield instance


def deliver(client: MyKaarmaClient, dealer: str = DEALER) -> DeliveryOutcome:
    return client.deliver(dealer, BODY, lead_id=LEAD_ID)


def answer(
    httpserver: HTTPServer,
    status: int,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> None:
    if body is None:
        payload = ""
    elif isinstance(body, str):
        payload = body
    else:
        payload = json.dumps(body)
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_data(
        payload, status=status, headers=headers, content_type="application/json"
    )


# --- what is sent -----------------------------------------------------------------------


def test_request_line_headers_and_body(httpserver, client):
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        request.get_data()
        return Response(status=204)

    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_handler(handler)
    outcome = deliver(client)

    assert outcome == Delivered(204)
    (request,) = seen
    assert request.headers["Authorization"] == f"Basic {TOKEN}"
    assert request.headers["Idempotency-Key"] == LEAD_ID
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("leadpipe/")
    raw = request.get_data()
    assert json.loads(raw) == BODY
    assert json.loads(raw)["leadId"] == LEAD_ID
    assert b", " not in raw and b": " not in raw  # compact encoding
    assert "Cookie" not in request.headers


def test_dealer_uuid_is_one_quoted_path_segment(httpserver, client):
    raw_uris: list[str] = []

    def handler(request: Request) -> Response:
        raw_uris.append(request.environ["REQUEST_URI"])
        return Response(status=204)

    httpserver.expect_oneshot_request(
        "/leads/v2/dealer/d/1 ?x", method="POST"
    ).respond_with_handler(handler)
    assert isinstance(deliver(client, "d/1 ?x"), Delivered)
    assert raw_uris == ["/leads/v2/dealer/d%2F1%20%3Fx"]


def test_a_lead_id_that_is_no_legal_header_is_encoded_not_fatal(httpserver, client):
    keys: list[str] = []

    def handler(request: Request) -> Response:
        keys.append(request.headers["Idempotency-Key"])
        return Response(status=204)

    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_handler(handler)
    outcome = client.deliver(DEALER, BODY, lead_id="evil\r\nX-Injected: 1")
    assert isinstance(outcome, Delivered)
    assert keys == ["evil%0D%0AX-Injected%3A%201"]


def test_the_connection_is_reused():
    # Given a plain HTTP/1.1 keep-alive server that notes each client port
    ports: list[int] = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            ports.append(self.client_address[1])
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with MyKaarmaClient(url, USERNAME, SecretStr(PASSWORD), timeout=2) as pooled:
            # When three leads are delivered one after another
            outcomes = [deliver(pooled) for _ in range(3)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    # Then they all went over one pooled connection
    assert outcomes == [Delivered(204)] * 3
    assert len(ports) == 3
    assert len(set(ports)) == 1


# --- classification ---------------------------------------------------------------------


def test_200_with_envelope(httpserver, client):
    answer(
        httpserver,
        200,
        {
            "statusCode": 200,
            "error": None,
            "warnings": [{"code": "W1", "description": "phone missing", "metadata": {}}],
            "isNewCreated": True,
            "prospectUuid": "p-123",
        },
    )
    assert deliver(client) == Delivered(
        200,
        prospect_uuid="p-123",
        is_new_created=True,
        warnings=({"code": "W1", "description": "phone missing", "metadata": {}},),
    )


def test_204_is_delivered_without_details(httpserver, client):
    answer(httpserver, 204)
    assert deliver(client) == Delivered(204, None, None, ())


@pytest.mark.parametrize("body", ["<html>ok</html>", "[1, 2]", '{"prospectUuid": 5}'])
def test_a_2xx_is_delivered_even_with_an_odd_body(httpserver, client, body):
    answer(httpserver, 201, body)
    assert deliver(client) == Delivered(201)


def test_400_records_the_error_envelope(httpserver, client):
    answer(httpserver, 400, {"statusCode": 400, "error": ENVELOPE_ERROR, "warnings": []})
    assert deliver(client) == RejectedByMyKaarma(400, ENVELOPE_ERROR)


def test_401_without_envelope_records_the_body(httpserver, client):
    answer(httpserver, 401, "Unauthorized")
    assert deliver(client) == RejectedByMyKaarma(401, "Unauthorized", Answer.UNAUTHORIZED)


def test_404_with_empty_body(httpserver, client):
    answer(httpserver, 404)
    assert deliver(client) == RejectedByMyKaarma(404, None)


def test_403_long_body_is_cut_to_500_characters(httpserver, client):
    answer(httpserver, 403, "x" * 5000)
    outcome = deliver(client)
    assert isinstance(outcome, RejectedByMyKaarma)
    assert outcome.status == 403
    assert outcome.error == "x" * 500


def test_429_with_retry_after_seconds(httpserver, client):
    answer(httpserver, 429, {"statusCode": 429}, headers={"Retry-After": "7"})
    outcome = deliver(client)
    assert isinstance(outcome, TransientFailure)
    assert (outcome.status, outcome.retry_after) == (429, 7.0)
    assert "HTTP 429" in outcome.error


def test_429_with_retry_after_http_date(httpserver, client):
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    answer(httpserver, 429, headers={"Retry-After": later})
    outcome = deliver(client)
    assert isinstance(outcome, TransientFailure)
    assert outcome.status == 429
    assert outcome.retry_after is not None
    assert 100.0 < outcome.retry_after <= 121.0  # HTTP dates have one-second resolution


@pytest.mark.parametrize("status", [408, 425, 500, 502, 503, 504])
def test_transient_statuses(httpserver, client, status):
    answer(httpserver, status, {"statusCode": status, "error": ENVELOPE_ERROR})
    outcome = deliver(client)
    assert isinstance(outcome, TransientFailure)
    assert outcome.status == status
    assert outcome.retry_after is None
    assert "INVALID_VIN vin is not valid" in outcome.error


def test_503_with_retry_after_and_plain_body(httpserver, client):
    answer(httpserver, 503, "down for maintenance", headers={"Retry-After": "120"})
    outcome = deliver(client)
    assert outcome == TransientFailure(503, "HTTP 503: down for maintenance", 120.0)


@pytest.mark.parametrize("status", [400, 404, 409, 410, 413, 415, 422])
def test_other_4xx_are_rejections(httpserver, client, status):
    answer(httpserver, status, {"error": ENVELOPE_ERROR})
    outcome = deliver(client)
    assert outcome == RejectedByMyKaarma(status, ENVELOPE_ERROR)
    assert breaker_answer(outcome) == Answer.REJECTED


@pytest.mark.parametrize(
    ("status", "meaning"), [(401, Answer.UNAUTHORIZED), (403, Answer.FORBIDDEN)]
)
def test_401_and_403_refuse_access_not_the_lead(httpserver, client, status, meaning):
    answer(httpserver, status, {"error": ENVELOPE_ERROR})
    outcome = deliver(client)
    assert outcome == RejectedByMyKaarma(status, ENVELOPE_ERROR, meaning)
    assert breaker_answer(outcome) == meaning


def test_breaker_answer_of_delivered_and_transient():
    assert breaker_answer(Delivered(200)) == Answer.DELIVERED
    assert breaker_answer(TransientFailure(503, "x")) == Answer.TRANSIENT


def test_a_redirect_is_not_followed_and_is_transient(httpserver, client):
    answer(httpserver, 301, headers={"Location": "https://elsewhere.example/leads"})
    outcome = deliver(client)
    assert isinstance(outcome, TransientFailure)
    assert outcome.status == 301
    assert "elsewhere.example" in outcome.error
    assert len(httpserver.log) == 1  # nothing was sent to the new location


def test_read_timeout(httpserver):
    # Given a server that answers only when released (bounded, so it never hangs)
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(timeout=10)
        return Response(status=204)

    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_handler(slow)
    client = MyKaarmaClient(httpserver.url_for("/"), USERNAME, SecretStr(PASSWORD), timeout=0.2)
    try:
        # When the client waits longer than its timeout
        started = time.monotonic()
        outcome = deliver(client)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        client.close()
    # Then the attempt fails as transient, well before the server would have answered
    assert isinstance(outcome, TransientFailure)
    assert outcome.status is None
    assert outcome.error.startswith("timeout: ReadTimeout")
    assert elapsed < 5.0


def test_connection_refused():
    # A bound socket that never listens: connecting to it is refused, and nobody
    # else can take the port while the test runs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with MyKaarmaClient(
            f"http://127.0.0.1:{port}", USERNAME, SecretStr(PASSWORD), timeout=2
        ) as client:
            outcome = deliver(client)
    assert isinstance(outcome, TransientFailure)
    assert outcome.status is None
    assert outcome.error.startswith("connection error: ConnectionError")
    assert len(outcome.error) <= 500


@pytest.fixture
def raw_server() -> Iterator[tuple[str, list[bytes]]]:
    """A one-shot server that sends whatever bytes the test puts in the list, then hangs up."""
    replies: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)  # bounded: the thread ends even if no client comes

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                received += chunk
            conn.sendall(replies[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", replies
    thread.join(timeout=10)
    listener.close()


@pytest.mark.parametrize(
    ("status_line", "expected"),
    [
        (b"HTTP/1.1 200 OK", Delivered(200)),  # accepted: the broken body changes nothing
        (b"HTTP/1.1 500 Internal Server Error", TransientFailure(500, "HTTP 500: (no body)")),
        (b"HTTP/1.1 422 Unprocessable Entity", RejectedByMyKaarma(422, None)),
    ],
)
def test_a_body_cut_short_is_classified_by_its_status(raw_server, caplog, status_line, expected):
    url, replies = raw_server
    replies.append(status_line + b'\r\nContent-Length: 1000\r\n\r\n{"prospectUuid": "p')
    with MyKaarmaClient(url, USERNAME, SecretStr(PASSWORD), timeout=2) as short:
        assert deliver(short) == expected
    assert f"lead {LEAD_ID}: HTTP" in caplog.text
    assert "body unreadable" in caplog.text


def test_a_huge_error_body_is_read_only_in_part(httpserver, client):
    answer(httpserver, 400, "y" * (3 * 1024 * 1024))
    outcome = deliver(client)
    assert outcome == RejectedByMyKaarma(400, "y" * 500)


# --- secrets ----------------------------------------------------------------------------


def test_credentials_never_leak(httpserver, client, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    answer(httpserver, 200, {"prospectUuid": "p-1"})
    answer(httpserver, 400, {"error": ENVELOPE_ERROR})
    answer(httpserver, 503, "down")
    outcomes = [deliver(client), deliver(client), deliver(client)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        refused = MyKaarmaClient(
            f"http://127.0.0.1:{sock.getsockname()[1]}", USERNAME, SecretStr(PASSWORD), timeout=1
        )
        outcomes.append(deliver(refused))
        refused.close()

    assert [type(o) for o in outcomes] == [
        Delivered,
        RejectedByMyKaarma,
        TransientFailure,
        TransientFailure,
    ]
    assert any(r.name == "pipeline.client" for r in caplog.records)  # we did log
    texts = [
        caplog.text,
        repr(client),
        repr(client._session.auth),
        *(str(o) for o in outcomes),
        *(repr(o) for o in outcomes),
    ]
    for text in texts:
        assert PASSWORD not in text
        assert TOKEN not in text
    assert "MyKaarmaClient(base_url=" in repr(client)


def test_credentials_in_the_base_url_are_refused_without_echo():
    with pytest.raises(ValueError) as caught:
        MyKaarmaClient("https://u:hunter2@api.example", USERNAME, SecretStr(PASSWORD), timeout=1)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("base_url", "kwargs", "match"),
    [
        ("https://api.example", {"verify": False}, "TLS verification cannot be turned off"),
        ("https://api.example", {"timeout": 0}, "timeout must be positive"),
        ("ftp://api.example", {}, "must be an http:// or https:// URL"),
        ("api.example", {}, "must be an http:// or https:// URL"),
    ],
)
def test_unsafe_or_impossible_settings_are_refused(base_url, kwargs, match):
    options = {"timeout": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        MyKaarmaClient(base_url, USERNAME, SecretStr(PASSWORD), **options)


def test_a_ca_bundle_path_is_accepted():
    client = MyKaarmaClient(
        "https://api.example/", USERNAME, SecretStr(PASSWORD), timeout=1, verify="/etc/ca.pem"
    )
    assert client._session.verify == "/etc/ca.pem"
    assert client.url_for("x y") == "https://api.example/leads/v2/dealer/x%20y"
    client.close()


# --- pure helpers -----------------------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("Wed, 01 Jan 2025 12:02:00 GMT", 120.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),  # in the past
        ("Wed, 01 Jan 2025 12:00:30 +0000", 30.0),
        ("Wed, 01 Jan 2025 12:00:30", 30.0),  # no zone: UTC
        ("soon", None),
        ("", None),
        ("1e3", None),
        ("9" * 400, None),
        (None, None),
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


def test_classify_is_the_one_place_for_statuses():
    assert isinstance(classify(299, b"", {}), Delivered)
    assert isinstance(classify(100, b"", {}), TransientFailure)
    assert isinstance(classify(499, b"", {}), RejectedByMyKaarma)
    assert isinstance(classify(599, b"", {}), TransientFailure)


def test_the_envelope_is_read_leniently():
    # Mistyped values read as absent, a malformed warning does not hide the good one,
    # unknown keys are ignored.
    body = {
        "statusCode": "two hundred",
        "isNewCreated": "maybe",
        "prospectUuid": "p-9",
        "warnings": ["junk", {"code": 7, "description": "numeric code", "extra": "kept"}],
        "somethingNew": {"a": 1},
    }
    assert classify(200, json.dumps(body).encode(), {}) == Delivered(
        200,
        prospect_uuid="p-9",
        is_new_created=None,
        warnings=({"code": "7", "description": "numeric code", "extra": "kept"},),
    )


def test_an_error_that_is_no_object_falls_back_to_the_body():
    content = b'{"error": "bad things"}'
    assert classify(400, content, {}) == RejectedByMyKaarma(400, '{"error": "bad things"}')


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    "body",
    [
        DEEP,  # json.loads raises RecursionError (issue 10: an endless re-POST)
        '{"prospectUuid": "p", "warnings": ' + DEEP + "}",
        "",
        "not json at all \xff",
        '{"a": "' + "x" * (3 * 1024 * 1024) + '"}',  # past the read cap: cut short
        '{"statusCode": 200, "error": {"code": ' + DEEP + "}}",
    ],
    ids=["deep", "deep-warnings", "empty", "not-json", "huge", "deep-error"],
)
def test_any_2xx_body_is_delivered_and_deliver_never_raises(httpserver, client, body):
    # Given myKaarma answers 201 with a body no parser copes with
    answer(httpserver, 201, body)
    # When the lead is posted, then it is delivered: one POST, no exception
    outcome = deliver(client)
    assert isinstance(outcome, Delivered) and outcome.status == 201
    assert len(httpserver.log) == 1


def test_a_deep_error_body_still_decides_by_its_status(httpserver, client):
    answer(httpserver, 400, DEEP)
    assert isinstance(deliver(client), RejectedByMyKaarma)
    answer(httpserver, 503, DEEP)
    assert isinstance(deliver(client), TransientFailure)


def test_classify_survives_a_deep_body():
    assert classify(200, DEEP.encode(), {}) == Delivered(200)
