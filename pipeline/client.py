"""The myKaarma client: one POST per lead, classified into one of three outcomes.

This is the one place that looks at HTTP status codes and `requests` exceptions:

    2xx                                         Delivered
    408, 425, 429, 5xx, timeout, network error  TransientFailure   (retry with backoff)
    401, 403                                    RejectedByMyKaarma with `access` set
                                                (the dealer's breaker opens; the lead is held)
    any other 4xx                               RejectedByMyKaarma (dead letter at once)
    1xx, 3xx, other                             TransientFailure   (see below)

A 2xx is always `Delivered`, whatever its body (empty, huge, not JSON, JSON nested
100,000 deep): myKaarma has the lead, and sending it again would risk a duplicate.
Reading the body never raises out of `deliver`: an answer whose body cannot be read
is classified by its status alone. Redirects are not followed (a POST turned into
a GET, credentials sent elsewhere); a 3xx means a wrong base URL or a maintenance page,
which a person can fix, so it is retried and ends `exhausted`, replayable, rather than
`rejected` as if the lead itself were bad.

These three outcome values are the failure vocabulary of the lead flow: the stages
(`pipeline/stages.py`) decide on them, and nothing raises for what myKaarma answers.

Credentials live only in the session's auth object; they never appear in a repr, a
log line, an outcome or an exception message.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from pydantic import SecretStr
from requests.auth import AuthBase

from pipeline.breaker import Answer
from pipeline.http_session import pooled_session
from pipeline.mykaarma import MyKaarmaResponse

logger = logging.getLogger(__name__)

#: Statuses below 500 that mean "try again later": Request Timeout, Too Early, Too Many.
TRANSIENT_4XX = frozenset({408, 425, 429})
#: Statuses that refuse us rather than the lead: bad credentials, a dealer that forbids us.
ACCESS_DENIED = {401: Answer.UNAUTHORIZED, 403: Answer.FORBIDDEN}
#: Longest excerpt of a response body kept in an outcome, characters.
BODY_EXCERPT_CHARS = 500
#: Most of a response body read, bytes: myKaarma's envelopes are a few hundred bytes;
#: a multi-megabyte error page from a proxy is cut off rather than held in memory.
MAX_RESPONSE_BYTES = 1024 * 1024
#: Connection pools the adapter keeps, one per host: myKaarma's, and a proxy's if any.
HOST_POOLS = 4
#: The path of "Insert leads" under the API root.
LEADS_PATH = "/leads/v2/dealer/"

_DELTA_SECONDS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
#: A header value requests accepts as is: visible ASCII and spaces, no CR/LF.
_PLAIN_HEADER = re.compile(r"(?:[\x21-\x7e][\x20-\x7e]*)?")


@dataclass(frozen=True, slots=True)
class Delivered:
    """myKaarma accepted the lead (2xx)."""

    status: int
    prospect_uuid: str | None = None
    is_new_created: bool | None = None
    warnings: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class TransientFailure:
    """Not accepted this time (408/425/429, 5xx, timeout, network); retry later."""

    status: int | None
    error: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class RejectedByMyKaarma:
    """myKaarma refused the lead (a 4xx other than 408/425/429); retrying will not help."""

    status: int
    error: dict[str, Any] | str | None
    #: Set for 401 (our credentials, every dealer) and 403 (this dealer refuses us):
    #: not the lead's fault, so the lead is held rather than dead (CONTRACT section 4).
    access: Answer | None = None


DeliveryOutcome = Delivered | TransientFailure | RejectedByMyKaarma


class _BasicAuth(AuthBase):
    """HTTP basic auth with the header built once; its repr shows no secret."""

    def __init__(self, username: str, password: SecretStr) -> None:
        token = f"{username}:{password.get_secret_value()}".encode()
        self._header = "Basic " + base64.b64encode(token).decode("ascii")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<basic auth **********>"


class MyKaarmaClient:
    """Delivers lead bodies to myKaarma over one pooled, thread-safe-in-practice session.

    `timeout` bounds the connect and each read separately (requests' model): a server
    that accepts the connection and then says nothing for `timeout` seconds fails the
    attempt. TLS certificates are always verified; `verify` may name a CA bundle.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: SecretStr,
        *,
        timeout: float,
        pool_size: int = 32,
        verify: bool | str = True,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base_url must not carry credentials; pass username and password")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._timeouts = (timeout, timeout)  # (connect, read)
        self._verify = verify

        session = pooled_session(
            host_pools=HOST_POOLS,
            pool_size=pool_size,
            verify=verify,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        session.auth = _BasicAuth(username, password)
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # stateless API
        self._session = session

    def url_for(self, dealer_uuid: str) -> str:
        """The "Insert leads" URL for a dealer; the uuid is quoted as one path segment."""
        return self.base_url + LEADS_PATH + quote(dealer_uuid, safe="")

    def deliver(self, dealer_uuid: str, body: dict[str, Any], *, lead_id: str) -> DeliveryOutcome:
        """POST one lead body; never raises for anything myKaarma or the network does."""
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {"Idempotency-Key": _header_safe(lead_id)}
        try:
            response = self._session.post(
                self.url_for(dealer_uuid),
                data=data,
                headers=headers,
                timeout=self._timeouts,
                allow_redirects=False,
                stream=True,  # the status first; the body is read below, bounded
            )
        except requests.Timeout as exc:
            outcome: DeliveryOutcome = TransientFailure(None, f"timeout: {_describe(exc)}")
        except requests.ConnectionError as exc:
            outcome = TransientFailure(None, f"connection error: {_describe(exc)}")
        except requests.RequestException as exc:
            # Nothing else is expected here; whatever it is, the lead is kept and
            # retried, and its record shows why.
            outcome = TransientFailure(None, f"request failed: {_describe(exc)}")
        else:
            try:
                content = _read_body(response)
            except requests.RequestException as exc:
                # Status line and headers arrived, the body broke off: the status
                # still decides (a 2xx is delivered), the body is just unknown.
                logger.warning(
                    "lead %s: HTTP %s body unreadable: %s",
                    lead_id,
                    response.status_code,
                    type(exc).__name__,
                )
                content = b""
            finally:
                response.close()
            try:
                outcome = classify(response.status_code, content, response.headers)
            except Exception as exc:  # a body no parser copes with: the status decides
                logger.warning(
                    "lead %s: HTTP %s body unreadable: %s",
                    lead_id,
                    response.status_code,
                    type(exc).__name__,
                )
                outcome = classify(response.status_code, b"", response.headers)
        logger.debug("lead %s: POST dealer %s -> %s", lead_id, dealer_uuid, summary(outcome))
        return outcome

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> MyKaarmaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MyKaarmaClient(base_url={self.base_url!r}, timeout={self.timeout})"


def classify(status: int, content: bytes, headers: Mapping[str, str]) -> DeliveryOutcome:
    """Turn one HTTP answer into an outcome; `headers` is case-insensitive (requests')."""
    if 200 <= status < 300:
        envelope = _envelope(content)
        if envelope is None:
            return Delivered(status)
        return Delivered(
            status,
            prospect_uuid=envelope.prospect_uuid,
            is_new_created=envelope.is_new_created,
            warnings=tuple(
                w.model_dump(by_alias=True, exclude_none=True) for w in envelope.warnings
            ),
        )
    if status in TRANSIENT_4XX or status >= 500:
        return TransientFailure(
            status,
            f"HTTP {status}: {_error_text(content)}",
            parse_retry_after(headers.get("Retry-After")),
        )
    if 400 <= status < 500:
        envelope = _envelope(content)
        access = ACCESS_DENIED.get(status)
        if envelope is not None and envelope.error is not None:
            return RejectedByMyKaarma(
                status, envelope.error.model_dump(by_alias=True, exclude_none=True), access
            )
        return RejectedByMyKaarma(status, _excerpt(content) or None, access)
    where = headers.get("Location")
    detail = f" to {_excerpt(where.encode())}" if 300 <= status < 400 and where else ""
    return TransientFailure(status, f"unexpected HTTP {status}{detail}")


def breaker_answer(outcome: DeliveryOutcome) -> Answer:
    """What an outcome means to the dealer's breaker (pipeline/breaker.py)."""
    if isinstance(outcome, Delivered):
        return Answer.DELIVERED
    if isinstance(outcome, TransientFailure):
        return Answer.TRANSIENT
    return outcome.access or Answer.REJECTED


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date.

    A negative delta or a date in the past is 0; anything unreadable is None.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return max(seconds, 0.0) if seconds < float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _read_body(response: requests.Response) -> bytes:
    """At most `MAX_RESPONSE_BYTES` of the body; a fully read connection goes back to the pool."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break  # the rest is never read; closing drops this one connection
    return b"".join(chunks)


def _envelope(content: bytes) -> MyKaarmaResponse | None:
    """myKaarma's envelope, or None for any body that is not one: not JSON, not an
    object, nested too deep for the parser (RecursionError), or of the wrong shape."""
    if not content.strip():
        return None
    try:
        document = json.loads(content)
        if not isinstance(document, dict):
            return None
        return MyKaarmaResponse.model_validate(document)
    except (ValueError, RecursionError):  # JSON, UTF-8 and pydantic's errors are ValueErrors
        return None


def _error_text(content: bytes) -> str:
    """The envelope's error description when there is one, else the start of the body."""
    envelope = _envelope(content)
    if envelope is not None and envelope.error is not None:
        error = envelope.error
        text = " ".join(part for part in (error.code, error.description) if part)
        if text:
            return _excerpt(text.encode())
    return _excerpt(content) or "(no body)"


def _excerpt(content: bytes) -> str:
    text = content[: BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return " ".join(text.split())[:BODY_EXCERPT_CHARS]


def _describe(exc: BaseException) -> str:
    """An exception as one short line; requests' messages hold the URL, never the auth."""
    return _excerpt(f"{type(exc).__name__}: {exc}".encode())


def _header_safe(value: str) -> str:
    """`value` when it is a legal header value, else percent-encoded (never raises)."""
    return value if _PLAIN_HEADER.fullmatch(value) else quote(value, safe="")


def summary(outcome: DeliveryOutcome) -> str:
    """An outcome for a log line: statuses only, never a response body (it may echo data)."""
    if isinstance(outcome, Delivered):
        return f"delivered (HTTP {outcome.status})"
    if isinstance(outcome, RejectedByMyKaarma):
        return f"rejected (HTTP {outcome.status})"
    if outcome.status is not None:
        return f"transient (HTTP {outcome.status})"
    return f"transient ({outcome.error})"  # a requests exception: names the URL, no body
