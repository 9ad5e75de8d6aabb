"""Standard Webhooks format and the events partners receive (CONTRACT section 9).

The signature is checked with the `standardwebhooks` package's own verifier, the one a
partner would use; events are checked for exactly the contract's fields and for the
absence of any customer data.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from pipeline.notifications import EventType, build_event, dead_errors, rule_only
from pipeline.webhooks import (
    WebhookConfigError,
    check_secret,
    check_url,
    encode_body,
    signed_headers,
    target_from,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
AT = 1_780_000_000.25

# --- signature -------------------------------------------------------------------------


def test_signature_verifies_with_the_standardwebhooks_package() -> None:
    body = encode_body(build_event("lead.delivered", "lead-1", AT, {"partner": "acme"}))
    now = int(time.time())
    headers = signed_headers(SecretStr(SECRET), msg_id="msg_abc", timestamp=now, body=body)

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-signature"].startswith("v1,")
    parsed = Webhook(SECRET).verify(body, headers)
    assert parsed["type"] == "lead.delivered"


def test_signature_fails_with_another_secret_or_a_changed_body() -> None:
    body = encode_body({"type": "lead.dead", "timestamp": "t", "data": {}})
    headers = signed_headers(
        SecretStr(SECRET), msg_id="msg_1", timestamp=int(time.time()), body=body
    )
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)


def test_signature_matches_the_specification_by_hand() -> None:
    """v1 = base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), computed independently."""
    import hashlib
    import hmac

    body = b'{"type":"lead.duplicate"}'
    headers = signed_headers(SecretStr(SECRET), msg_id="msg_x", timestamp=1700000000, body=body)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, b"msg_x.1700000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


# --- configuration checks --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.acme.example/leads",
        "http://127.0.0.1:8099/h",
        "http://localhost/h",
        "http://[::1]:9/x",
    ],
)
def test_usable_urls(url: str) -> None:
    assert check_url(url, key="partners.acme.webhook.url") == url


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://hooks.acme.example/", "https://"),
        ("http://hooks.acme.example/", "loopback"),
        ("http://10.0.0.1/", "loopback"),
        ("https:///nohost", "no host"),
        ("https://user:pw@hooks.acme.example/", "credentials"),
        ("", "https://"),
        (42, "https://"),
        ("https://h:99999/", "not a valid URL"),
    ],
)
def test_refused_urls_name_the_key(url: object, words: str) -> None:
    with pytest.raises(WebhookConfigError) as caught:
        check_url(url, key="partners.acme.webhook.url")
    assert str(caught.value).startswith("partners.acme.webhook.url:")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "is not set"),
        ("  ", "is not set"),
        ("sk_live_abc", "whsec_"),
        ("whsec_not base64!", "base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "at least 24"),
    ],
)
def test_refused_secrets_name_key_and_variable_never_the_value(
    value: str | None, words: str
) -> None:
    with pytest.raises(WebhookConfigError) as caught:
        check_secret(value, variable="ACME_WEBHOOK_SECRET", key="partners.acme.webhook.secret_env")
    message = str(caught.value)
    assert "partners.acme.webhook.secret_env" in message
    assert "ACME_WEBHOOK_SECRET" in message
    assert words in message
    if value and value.strip():
        assert value not in message


def test_target_from_a_routing_section() -> None:
    target = target_from(
        {"url": "https://hooks.acme.example/leads", "secret_env": "ACME_WEBHOOK_SECRET"},
        key="partners.acme.webhook",
        environ={"ACME_WEBHOOK_SECRET": SECRET},
    )
    assert target.url == "https://hooks.acme.example/leads"
    assert target.secret.get_secret_value() == SECRET
    assert SECRET not in repr(target)
    with pytest.raises(WebhookConfigError, match=r"partners\.acme\.webhook\.secret_env"):
        target_from(
            {"url": "https://hooks.acme.example/leads", "secret_env": "MISSING"},
            key="partners.acme.webhook",
            environ={},
        )


# --- events ----------------------------------------------------------------------------


def test_delivered_event_has_exactly_the_contract_fields() -> None:
    snapshot = {
        "partner": "acme",
        "transactionId": "T-1",
        "dealerUuid": "d-1",
        "prospectUuid": "p-9",
        "isNewCreated": "true",
        "error": "ignored",
    }
    event = build_event("lead.delivered", "lead-1", AT, snapshot)
    assert event == {
        "type": "lead.delivered",
        "timestamp": "2026-05-28T20:26:40.250+00:00",
        "data": {
            "leadId": "lead-1",
            "transactionId": "T-1",
            "partner": "acme",
            "dealerUuid": "d-1",
            "prospectUuid": "p-9",
            "isNewCreated": True,
            "at": "2026-05-28T20:26:40.250+00:00",
        },
    }


def test_duplicate_event() -> None:
    event = build_event("lead.duplicate", "lead-2", AT, {"duplicateOf": "lead-1"})
    assert event["type"] == "lead.duplicate"
    assert list(event["data"]) == ["leadId", "transactionId", "partner", "duplicateOf", "at"]
    assert event["data"]["duplicateOf"] == "lead-1"
    assert event["data"]["transactionId"] is None


def test_dead_event_invalid_keeps_field_paths_and_rules_only() -> None:
    error = {
        "message": "...",
        "errors": [
            {
                "field": "vehicle.licensePlate",
                "message": 'must be 1-8 characters (got "ABC123456")',
            },
            {"field": "lead.email", "message": "must be a valid email address (bob@@x)"},
        ],
    }
    event = build_event(
        "lead.dead", "lead-3", AT, {"reason": "invalid", "error": json.dumps(error)}
    )
    data = event["data"]
    assert list(data) == ["leadId", "transactionId", "partner", "reason", "errors", "at"]
    assert data["reason"] == "invalid"
    assert data["errors"] == [
        {"field": "vehicle.licensePlate", "message": "must be 1-8 characters"},
        {"field": "lead.email", "message": "must be a valid email address"},
    ]
    assert "ABC123456" not in encode_body(event).decode()


@pytest.mark.parametrize(
    ("reason", "error", "expected"),
    [
        (
            "rejected",
            {"status": 400, "mykaarma": {"x": "John"}},
            [{"status": 400, "message": "myKaarma rejected the lead with HTTP 400"}],
        ),
        (
            "exhausted",
            {"status": 503, "message": "gave up; last: HTTP 503: echo john@x"},
            [{"status": 503, "message": "myKaarma did not accept the lead after 8 attempts"}],
        ),
        (
            "exhausted",
            {"status": None, "message": "timeout"},
            [{"field": "lead", "message": "myKaarma could not be reached"}],
        ),
        (
            "unroutable",
            {"message": "no dealer for partner acme and state TX"},
            [
                {
                    "field": "dealerUuid",
                    "message": "no dealer is configured for this lead's partner and state",
                }
            ],
        ),
        (
            "expired",
            None,
            [{"field": "receivedAt", "message": "not delivered within the maximum lead age"}],
        ),
    ],
)
def test_dead_errors_by_reason(reason: str, error: object, expected: object) -> None:
    text = json.dumps(error) if error is not None else None
    assert dead_errors(reason, text, "8") == expected


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError):
        build_event("lead.exploded", "x", AT, {})
    assert EventType("lead.dead") is EventType.DEAD


@given(secret_value=st.text(min_size=1, max_size=40).filter(lambda s: "(" not in s))
def test_no_quoted_value_survives_in_a_dead_event(secret_value: str) -> None:
    """Whatever a validation message quotes after the rule, the event does not carry it."""
    error = {"errors": [{"field": "lead.firstName", "message": f"too long (got {secret_value!r})"}]}
    body = encode_body(
        build_event("lead.dead", "id", AT, {"reason": "invalid", "error": json.dumps(error)})
    )
    data = json.loads(body)["data"]
    assert data["errors"] == [{"field": "lead.firstName", "message": "too long"}]


def test_rule_only() -> None:
    assert rule_only("must be 17 characters (got 16)") == "must be 17 characters"
    assert rule_only("") == "is invalid"
    assert rule_only(None) == "is invalid"
