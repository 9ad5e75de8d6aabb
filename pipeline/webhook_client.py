"""The notification sender: one signed POST to a partner's endpoint, classified.

    2xx                                           Sent
    anything else: 3xx (never followed), 4xx,     NotSent  (retried with backoff;
    5xx, timeout, connection error, garbage                 Retry-After honoured)

Unlike myKaarma's answers, no status makes a notification hopeless at once: a
partner's 401 or 404 is usually a deploy in progress on their side, and Svix, Convoy
and Hook0 all retry every non-2xx until the attempts run out. A redirect is not
followed: the signature was made for this endpoint, and a 3xx from a webhook
endpoint is a misconfiguration a person fixes, so it is retried like any failure.

The body of the answer is read only up to `MAX_ANSWER_BYTES` and kept as a short
excerpt for the operator; it never decides anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from pipeline.client import parse_retry_after
from pipeline.http_session import pooled_session
from pipeline.webhooks import WebhookTarget, check_url, signed_headers

#: Most of a partner's answer read, bytes: enough for an error excerpt.
MAX_ANSWER_BYTES = 16 * 1024
#: Longest excerpt of an answer kept in an attempt, characters.
ANSWER_EXCERPT_CHARS = 200
#: Hosts whose connections are pooled: one per partner endpoint, a few partners.
HOST_POOLS = 16


@dataclass(frozen=True, slots=True)
class Sent:
    """The partner's endpoint accepted the event (2xx)."""

    status: int


@dataclass(frozen=True, slots=True)
class NotSent:
    """Not accepted this time; retry later (after `retry_after` seconds if it said so)."""

    status: int | None
    error: str
    retry_after: float | None = None


SendOutcome = Sent | NotSent


class WebhookSender:
    """Signs and POSTs notifications over one pooled session; never raises for
    anything the partner's endpoint or the network does."""

    def __init__(
        self,
        *,
        timeout: float,
        pool_size: int = 8,
        verify: bool | str = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = timeout
        self._clock = clock
        session = pooled_session(
            host_pools=HOST_POOLS,
            pool_size=pool_size,
            verify=verify,
            headers={"Content-Type": "application/json"},
        )
        session.trust_env = False  # no proxy or netrc credentials picked up from the host
        self._session = session

    def send(self, target: WebhookTarget, *, msg_id: str, body: bytes) -> SendOutcome:
        """POST one event body, signed for this attempt's time."""
        try:
            url = check_url(target.url, key="webhook.url")
        except ValueError as exc:
            return NotSent(None, f"refused: {exc}")
        headers = signed_headers(
            target.secret, msg_id=msg_id, timestamp=int(self._clock()), body=body
        )
        try:
            response = self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout as exc:
            return NotSent(None, f"timeout: {type(exc).__name__}")
        except requests.ConnectionError as exc:
            return NotSent(None, f"connection error: {_short(exc)}")
        except requests.RequestException as exc:
            return NotSent(None, f"request failed: {_short(exc)}")
        try:
            status = response.status_code
            excerpt = _excerpt(response)  # read, so the connection goes back to the pool
            if 200 <= status < 300:
                return Sent(status)
            if 300 <= status < 400:
                where = response.headers.get("Location", "")
                return NotSent(status, f"HTTP {status}: redirect to {where[:200]!r} not followed")
            return NotSent(
                status,
                f"HTTP {status}" + (f": {excerpt}" if excerpt else ""),
                parse_retry_after(response.headers.get("Retry-After")),
            )
        finally:
            response.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()


def _excerpt(response: requests.Response) -> str:
    try:
        raw = response.raw.read(MAX_ANSWER_BYTES, decode_content=True) or b""
    except Exception:
        return ""
    text = raw.decode("utf-8", errors="replace")
    return " ".join(text.split())[:ANSWER_EXCERPT_CHARS]


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:ANSWER_EXCERPT_CHARS]
