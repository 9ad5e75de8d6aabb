"""Standard Webhooks: the format, the signature and the rules for a partner's endpoint.

A notification is one HTTP POST whose body is `{"type", "timestamp", "data"}` and
whose headers are `webhook-id`, `webhook-timestamp` and `webhook-signature`
(https://www.standardwebhooks.com, the format Svix and others send). The signature is
`v1,` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")); it is computed by
the `standardwebhooks` package itself, so a partner's verifier and ours cannot drift.

- The `webhook-id` is the event's id: the same on every retry, so a receiver can
  drop a repeat. The `webhook-timestamp` is the time of the attempt (verifiers
  refuse a timestamp more than five minutes old), so the signature is made anew per
  attempt over the same body bytes.
- A secret is `whsec_` + base64 of at least `MIN_SECRET_BYTES` random bytes, the
  form Standard Webhooks and Svix hand out; anything else is refused when the routing
  file is read, naming the key, rather than failing at the first lead.
- An endpoint is `https://`, or `http://` to a loopback address (a receiver on the
  same machine, as in tests and the demo). Redirects are never followed (see
  `pipeline.webhook_client`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from standardwebhooks import Webhook

from config.urls import is_loopback

#: The prefix of a Standard Webhooks secret.
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: Shortest secret accepted, bytes after base64 decoding: the specification asks for
#: 24 to 64 random bytes; a shorter key makes the HMAC guessable.
MIN_SECRET_BYTES = 24

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class WebhookConfigError(ValueError):
    """A webhook URL or secret that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one partner's notifications go, and the key that signs them."""

    url: str
    secret_env: str
    secret: SecretStr

    def __repr__(self) -> str:
        return f"WebhookTarget(url={self.url!r}, secret_env={self.secret_env!r})"


def check_url(url: object, *, key: str) -> str:
    """`url` when notifications may go there; else `WebhookConfigError` naming `key`.

    HTTPS everywhere, plain HTTP only to a loopback address; a host is required and
    credentials in the URL are refused (they would be sent in clear to every hop's log).
    """
    if not isinstance(url, str) or not url.strip():
        raise WebhookConfigError(f"{key}: must be an https:// URL")
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise WebhookConfigError(f"{key}: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookConfigError(
            f"{key}: must be an https:// URL (http:// only to a loopback address), "
            f"got {scheme or 'no scheme'}"
        )
    if not host:
        raise WebhookConfigError(f"{key}: the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookConfigError(f"{key}: the URL must not carry credentials")
    if scheme == "http" and not is_loopback(host):
        raise WebhookConfigError(
            f"{key}: http:// is allowed only to a loopback address; use https:// for {host}"
        )
    return url.strip()


def check_secret(value: str | None, *, variable: str, key: str) -> SecretStr:
    """The secret held by environment variable `variable`, checked; else an error that
    names both the routing key and the variable (never the value)."""
    if value is None or not value.strip():
        raise WebhookConfigError(f"{key}: environment variable {variable} is not set")
    text = value.strip()
    if not text.startswith(SECRET_PREFIX):
        raise WebhookConfigError(
            f"{key}: {variable} must hold a Standard Webhooks secret ({SECRET_PREFIX}...)"
        )
    try:
        raw = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise WebhookConfigError(
            f"{key}: {variable} must be {SECRET_PREFIX} followed by base64"
        ) from None
    if len(raw) < MIN_SECRET_BYTES:
        raise WebhookConfigError(
            f"{key}: {variable} holds {len(raw)} bytes of key; at least {MIN_SECRET_BYTES} "
            "are required"
        )
    return SecretStr(text)


def target_from(spec: Mapping[str, Any], *, key: str, environ: Mapping[str, str]) -> WebhookTarget:
    """A checked `WebhookTarget` from a routing section's `webhook = {url, secret_env}`;
    `WebhookConfigError` names every unusable key at once."""
    problems: list[str] = []
    url = secret = None
    try:
        url = check_url(spec.get("url"), key=f"{key}.url")
    except WebhookConfigError as exc:
        problems.append(str(exc))
    variable = spec.get("secret_env")
    if not isinstance(variable, str) or not variable.strip():
        problems.append(f"{key}.secret_env: must name an environment variable")
    else:
        try:
            secret = check_secret(
                environ.get(variable.strip()), variable=variable, key=f"{key}.secret_env"
            )
        except WebhookConfigError as exc:
            problems.append(str(exc))
    if problems or url is None or secret is None or not isinstance(variable, str):
        raise WebhookConfigError("; ".join(problems))
    return WebhookTarget(url=url, secret_env=variable.strip(), secret=secret)


def encode_body(event: Mapping[str, Any]) -> bytes:
    """The body bytes of an event: compact JSON, keys in the order built. Built once per
    event from stored fields, so every retry sends (and signs) the same bytes."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: SecretStr, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value, by the `standardwebhooks` reference package."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signer = Webhook(secret.get_secret_value())
    return signer.sign(msg_id=msg_id, timestamp=when, data=body.decode("utf-8"))


def signed_headers(
    secret: SecretStr, *, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }
