"""Security (issue 6, case 10): customer data and secrets never leak, Redis with a
password works through the URL, and TLS verification to myKaarma is never off.

Flower (401 without credentials, masked task arguments in its pages and API) is
covered by tests/integration/test_flower.py, not repeated here.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from config import load_settings
from pipeline.client import MyKaarmaClient, TransientFailure
from pipeline.vin import check_digit
from tasks.fetch import PREFIX as FETCH_PREFIX
from tasks.runtime import Runtime
from tests.reliability.conftest import ReliabilityStack, StackFactory, text, wait_until
from tests.stack import USERNAME, valid_payload

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
#: Product code: where a `verify=False` would turn TLS verification off.
SOURCE_DIRS = ("pipeline", "tasks", "store", "config", "leadpipe", "bench")


def _canary_vin(serial: str) -> str:
    vin = "1HGCM8260" + "3A" + serial
    digit = check_digit(vin)
    assert digit is not None
    return vin[:8] + digit + vin[9:]


class Canary:
    """Sentinel values that must appear nowhere but in the lead record itself."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex
        self.email = f"canary.{tag[:10]}@pii-canary.example"
        self.first = f"Firstcanary{tag[:6]}"
        self.last = f"Lastcanary{tag[6:12]}"
        self.vin = _canary_vin(str(int(tag[:8], 16))[-6:].rjust(6, "0"))
        self.plate = f"CN{tag[12:17]}".upper()
        self.mykaarma_password = f"mk-pw-canary-{tag[17:27]}"
        self.redis_password = f"redis-pw-canary-{tag[20:30]}"
        basic = f"{USERNAME}:{self.mykaarma_password}".encode()
        self.basic_token = base64.b64encode(basic).decode()

    def values(self) -> dict[str, str]:
        return {
            "email": self.email,
            "first name": self.first,
            "last name": self.last,
            "VIN": self.vin,
            "plate": self.plate,
            "myKaarma password": self.mykaarma_password,
            "Redis password": self.redis_password,
            "basic auth token": self.basic_token,
        }

    def find(self, text: str) -> list[str]:
        """The canaries in `text` (case-insensitive)."""
        lowered = text.lower()
        return [name for name, value in self.values().items() if value.lower() in lowered]

    def payload(self, **vehicle: Any) -> dict[str, Any]:
        vehicle_fields = {
            "vin": self.vin,
            "licensePlate": self.plate,
            "state": "CA",
            "mileage": 42000,
            **vehicle,
        }
        return valid_payload(
            lead={"firstName": self.first, "lastName": self.last, "email": self.email},
            vehicle=vehicle_fields,
        )


def _readable(raw: Any) -> str:
    """A broker entry as text, with a kombu envelope's base64 body decoded too."""
    readable = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        entry = json.loads(readable)
    except ValueError:
        return readable
    envelopes = [entry, entry[0]] if isinstance(entry, list) and entry else [entry]
    for envelope in envelopes:
        if isinstance(envelope, dict) and isinstance(envelope.get("body"), str):
            with contextlib.suppress(binascii.Error, ValueError):
                body = base64.b64decode(envelope["body"])
                readable += body.decode("utf-8", errors="replace")
    return readable


def _broker_leaks(client: redis.Redis, canary: Canary) -> dict[str, list[str]]:
    """Canaries in every Redis key but the lead records (which hold the payload by
    design) and the upstream's own ingest messages (which carry it by definition)."""
    leaks: dict[str, list[str]] = {}
    for key in client.scan_iter(count=1000):
        name = text(key)
        if name.startswith("leadpipe:lead:") or name == "leads.ingest":
            continue
        if name.startswith(FETCH_PREFIX + "held.") and name.endswith(".leads.ingest"):
            continue  # ingest messages a worker holds (reliable fetch)
        kind = text(client.type(key))
        values: list[Any]
        if kind == "list":
            values = list(client.lrange(key, 0, -1))
        elif kind == "hash":
            values = list(client.hvals(key))
            if name == "unacked":  # [envelope, exchange, routing key]
                values = [v for v in values if json.loads(v)[2] != "leads.ingest"]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = list(client.zrange(key, 0, -1))
        else:
            values = [client.get(key) or b""]
        found = sorted({hit for value in values for hit in canary.find(_readable(value))})
        found += canary.find(name)
        if found:
            leaks[name] = found
    return leaks


def _queue_length(stack: ReliabilityStack, queue: str) -> int:
    return int(stack.redis.llen(queue))


def test_a_pii_canary_leaks_nowhere_at_debug_level_with_a_password_protected_redis(
    stacks: StackFactory,
) -> None:
    canary = Canary()
    _server, _directory, port = stacks.redis_server(
        password=canary.redis_password, name="redis-auth"
    )
    # Redis really requires the password ...
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).ping()
    url = f"redis://:{canary.redis_password}@127.0.0.1:{port}/0"
    stack = stacks(
        redis_url=url,
        fake_password=canary.mykaarma_password,
        MYKAARMA_PASSWORD=canary.mykaarma_password,
        LEADPIPE_LEASE_SECONDS="60",  # no sweep while messages wait on purpose
    )
    # Given canary leads: valid (delivered), invalid (dead at enrich), rejected by myKaarma
    valid = [stack.send(canary.payload(), partner="acme") for _ in range(3)]
    invalid = stack.send(canary.payload(mileage=0), partner="acme")
    rejected = stack.send(canary.payload(), partner="reject")
    ids = [*valid, invalid, rejected]

    # When each stage runs in its own DEBUG worker, with the next stage's messages
    # left waiting on the broker to be inspected
    ingest = stack.start_worker("ingest", queues=("leads.ingest", "celery"), loglevel="DEBUG")
    wait_until(
        lambda: _queue_length(stack, "leads.enrich") == len(ids),
        timeout=30,
        what="every lead ingested",
    )
    after_ingest = _broker_leaks(stack.redis, canary)
    enrich = stack.start_worker("enrich", queues=("leads.enrich",), loglevel="DEBUG")
    wait_until(
        lambda: _queue_length(stack, "leads.deliver") == len(valid) + 1,
        timeout=30,
        what="every valid lead enriched",
    )
    after_enrich = _broker_leaks(stack.redis, canary)
    deliver = stack.start_worker("deliver", queues=("leads.deliver",), loglevel="DEBUG")
    ledger = stack.ledger(ids, timeout=30)
    assert [ledger.states[i] for i in valid] == ["delivered"] * len(valid)
    assert (ledger.states[invalid], ledger.reasons[invalid]) == ("dead", "invalid")
    assert (ledger.states[rejected], ledger.reasons[rejected]) == ("dead", "rejected")
    assert all(r["authOk"] for r in stack.fake.requests)

    # Then no canary is in the messages after ingest ...
    assert after_ingest == {}, after_ingest
    assert after_enrich == {}, after_enrich
    assert _broker_leaks(stack.redis, canary) == {}
    # ... nor in any worker's log or stderr, at DEBUG
    for worker in (ingest, enrich, deliver):
        text = worker.log_text()
        assert "DEBUG" in text
        assert canary.find(text) == [], (worker.spec.name, canary.find(text))
    # ... nor in what an operator sees of a dead lead but its own payload
    for lead_id in (invalid, rejected):
        record = stack.record(lead_id)
        assert record is not None
        assert canary.find(json.dumps(record["error"])) == []
    print(
        f"\nPII canary: {len(ids)} leads through 3 DEBUG workers "
        f"({sum(len(w.log_text()) for w in (ingest, enrich, deliver))} bytes of logs), "
        "Redis with requirepass: 0 hits in logs, broker messages after ingest, dead-letter "
        f"errors; {ledger.summary()}"
    )


def test_no_code_turns_tls_verification_off() -> None:
    pattern = re.compile(
        r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|"
        r"_create_unverified_context|disable_warnings"
    )
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for directory in SOURCE_DIRS
        if (ROOT / directory).is_dir()
        for path in sorted((ROOT / directory).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert hits == []
    with pytest.raises(ValueError, match="TLS verification cannot be turned off"):
        MyKaarmaClient("https://api.example", "u", SecretStr("p"), timeout=1, verify=False)
    # The client a worker builds from its settings verifies certificates
    settings = load_settings(
        MYKAARMA_USERNAME="u", MYKAARMA_PASSWORD="p", LEADPIPE_REDIS_URL="redis://127.0.0.1:1/0"
    )
    client = Runtime(settings).client
    assert client._session.verify is True


@pytest.fixture
def self_signed_https(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate that answers 200."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip

    class Ok(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.skipif(
    subprocess.run(["which", "openssl"], capture_output=True).returncode != 0,
    reason="openssl is needed to make a self-signed certificate",
)
def test_a_self_signed_mykaarma_is_refused_not_trusted(self_signed_https: str) -> None:
    # Given a server that would accept the lead, behind a certificate nobody signed
    settings = load_settings(
        MYKAARMA_BASE_URL=self_signed_https,
        MYKAARMA_USERNAME="u",
        MYKAARMA_PASSWORD="p",
        LEADPIPE_REDIS_URL="redis://127.0.0.1:1/0",
        LEADPIPE_HTTP_TIMEOUT_SECONDS=5,
    )
    # When the worker's client posts to it
    with Runtime(settings).client as client:
        outcome = client.deliver("d-1", {"leadId": "x"}, lead_id="x")
    # Then the handshake fails: a transient failure, never a delivery
    assert isinstance(outcome, TransientFailure), outcome
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error or "SSLError" in outcome.error
