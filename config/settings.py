"""The one Settings class: every variable of CONTRACT section 2, typed and checked at start.

A bad value stops the process at start-up with a message naming the variable, rather
than failing on the first lead hours later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.urls import STATE_VARIABLE, check_broker_url, check_state_url
from pipeline.errors import SettingsError as SettingsError  # its home is the vocabulary

#: Total delivery attempts before a transient failure is dead-lettered as `exhausted`.
RETRY_MAX_ATTEMPTS = 8
#: First backoff step, seconds; doubles with each attempt.
RETRY_BASE_SECONDS = 2.0
#: Cap on one backoff delay, seconds (ten minutes: long enough to ride out a deploy).
RETRY_MAX_DELAY_SECONDS = 600.0
#: Connect + read timeout of one POST to myKaarma, seconds.
HTTP_TIMEOUT_SECONDS = 10.0
#: Where the embedded Redis keeps its files: one absolute place per user, so
#: `leadpipe submit` run from any directory finds the same embedded Redis.
DEFAULT_HOME = Path("~/.leadpipe")
#: myKaarma's production API root.
MYKAARMA_BASE_URL = "https://api.mykaarma.com"
#: A lead not in a terminal state and untouched this long is re-enqueued by the sweeper.
#: Ninety seconds keeps the contract's "any live worker takes over within 2 minutes".
LEASE_SECONDS = 90.0
#: Threads delivering to myKaarma per worker: delivery waits on the network, not the CPU.
#: 64 hides a 200 ms myKaarma at ~300 leads/s (`make bench`: 32 capped it at 160/s),
#: at the cost of up to 64 pooled connections to myKaarma per worker.
DELIVER_CONCURRENCY = 64
#: A lead not delivered this long after receipt ends dead `expired`, hours (three days:
#: a lead older than that is no longer a warm lead for the dealer).
MAX_LEAD_AGE_HOURS = 72.0
#: Consecutive transient failures that open a dealer's breaker.
BREAKER_FAILURES = 5
#: First wait before a probe, seconds; doubles per failed probe up to the retry cap.
BREAKER_COOLDOWN_SECONDS = 30.0
#: A lease must outlast this many HTTP timeouts: one POST may spend a full timeout
#: connecting and another reading, and a lease that ends mid-POST lets a second worker
#: POST the same lead.
LEASE_HTTP_TIMEOUTS = 2
#: How long a delivered or duplicate lead is kept, days (CONTRACT section 7).
RETENTION_DAYS = 30.0
#: How long a dead letter is kept unless replayed or purged, days.
DEAD_RETENTION_DAYS = 90.0
#: Attempts to send one outcome notification before it is kept as `failed`. With the
#: lead backoff (2 s doubling, 10 min cap) twelve attempts span about an hour: a
#: partner's deploy or short outage is ridden out, a dead endpoint stops costing.
NOTIFY_MAX_ATTEMPTS = 12
#: Threads sending notifications per worker: partners' endpoints are few and quick;
#: a slow one holds only these threads, never a lead's delivery thread.
NOTIFY_CONCURRENCY = 8
#: Largest accepted payload (serialized JSON, bytes); larger ones are dead `invalid`.
MAX_PAYLOAD_BYTES = 1_000_000

PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """leadpipe's configuration, from `LEADPIPE_*` and `MYKAARMA_*` variables."""

    model_config = SettingsConfigDict(
        env_prefix="",
        extra="ignore",
        populate_by_name=True,
        # Exact names only: with populate_by_name, a case-insensitive lookup also read
        # each field's own name from the environment ($HOME became LEADPIPE_HOME, a stray
        # REDIS_URL would have become LEADPIPE_REDIS_URL).
        case_sensitive=True,
        frozen=True,
    )

    redis_url: str | None = Field(default=None, alias="LEADPIPE_REDIS_URL")
    broker_url_override: str | None = Field(default=None, alias="LEADPIPE_BROKER_URL")
    home: Path = Field(default=DEFAULT_HOME, alias="LEADPIPE_HOME")
    mykaarma_base_url: str = Field(default=MYKAARMA_BASE_URL, alias="MYKAARMA_BASE_URL")
    mykaarma_username: str | None = Field(default=None, alias="MYKAARMA_USERNAME")
    mykaarma_password: SecretStr | None = Field(default=None, alias="MYKAARMA_PASSWORD")
    routing_file: Path | None = Field(default=None, alias="LEADPIPE_ROUTING_FILE")
    retry_max_attempts: int = Field(
        default=RETRY_MAX_ATTEMPTS, ge=1, le=1000, alias="LEADPIPE_RETRY_MAX_ATTEMPTS"
    )
    retry_base_seconds: PositiveSeconds = Field(
        default=RETRY_BASE_SECONDS, alias="LEADPIPE_RETRY_BASE_SECONDS"
    )
    retry_max_delay_seconds: PositiveSeconds = Field(
        default=RETRY_MAX_DELAY_SECONDS, alias="LEADPIPE_RETRY_MAX_DELAY_SECONDS"
    )
    http_timeout_seconds: PositiveSeconds = Field(
        default=HTTP_TIMEOUT_SECONDS, alias="LEADPIPE_HTTP_TIMEOUT_SECONDS"
    )
    lease_seconds: PositiveSeconds = Field(default=LEASE_SECONDS, alias="LEADPIPE_LEASE_SECONDS")
    deliver_concurrency: int = Field(
        default=DELIVER_CONCURRENCY, ge=1, le=512, alias="LEADPIPE_DELIVER_CONCURRENCY"
    )
    max_payload_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES, ge=1024, alias="LEADPIPE_MAX_PAYLOAD_BYTES"
    )
    max_lead_age_hours: PositiveSeconds = Field(
        default=MAX_LEAD_AGE_HOURS, alias="LEADPIPE_MAX_LEAD_AGE_HOURS"
    )
    breaker_failures: int = Field(
        default=BREAKER_FAILURES, ge=1, le=1_000_000, alias="LEADPIPE_BREAKER_FAILURES"
    )
    breaker_cooldown_seconds: PositiveSeconds = Field(
        default=BREAKER_COOLDOWN_SECONDS, alias="LEADPIPE_BREAKER_COOLDOWN_SECONDS"
    )
    flower_basic_auth: SecretStr | None = Field(default=None, alias="LEADPIPE_FLOWER_BASIC_AUTH")
    retention_days: float = Field(default=RETENTION_DAYS, gt=0, alias="LEADPIPE_RETENTION_DAYS")
    dead_retention_days: float = Field(
        default=DEAD_RETENTION_DAYS, gt=0, alias="LEADPIPE_DEAD_RETENTION_DAYS"
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        """`~` expanded and made absolute once, so every process agrees on the place."""
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _lease_outlasts_a_post(self) -> Settings:
        if self.lease_seconds <= LEASE_HTTP_TIMEOUTS * self.http_timeout_seconds:
            raise ValueError(
                f"LEADPIPE_LEASE_SECONDS ({self.lease_seconds:g}) must be more than "
                f"{LEASE_HTTP_TIMEOUTS} x LEADPIPE_HTTP_TIMEOUT_SECONDS "
                f"({self.http_timeout_seconds:g}): a lease that ends while a POST is still "
                "running lets another worker POST the same lead"
            )
        return self

    @property
    def retention_seconds(self) -> float:
        """LEADPIPE_RETENTION_DAYS in seconds."""
        return self.retention_days * 86_400

    @property
    def dead_retention_seconds(self) -> float:
        """LEADPIPE_DEAD_RETENTION_DAYS in seconds."""
        return self.dead_retention_days * 86_400

    notify_max_attempts: int = Field(
        default=NOTIFY_MAX_ATTEMPTS, ge=1, le=1000, alias="LEADPIPE_NOTIFY_MAX_ATTEMPTS"
    )
    notify_concurrency: int = Field(
        default=NOTIFY_CONCURRENCY, ge=1, le=256, alias="LEADPIPE_NOTIFY_CONCURRENCY"
    )
    #: Flower's remote control (shutdown, pool restart, autoscale, consumers, revoke,
    #: sending tasks): off unless set, since anyone with Flower's password could use it.
    flower_allow_control: bool = Field(default=False, alias="LEADPIPE_FLOWER_ALLOW_CONTROL")
    #: RabbitMQ only: `quorum` declares leadpipe's queues as quorum queues (replicated;
    #: recommended in production); `classic` keeps queues declared before as they are.
    amqp_queue_type: Literal["classic", "quorum"] = Field(
        default="classic", alias="LEADPIPE_AMQP_QUEUE_TYPE"
    )

    @field_validator("redis_url", "broker_url_override", "routing_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """An exported-but-empty variable means "not set", as in most shells' habits."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        return None if value is None else check_state_url(value)

    @field_validator("broker_url_override")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        return None if value is None else check_broker_url(value)

    @model_validator(mode="after")
    def _redis_as_broker(self) -> Settings:
        """Without LEADPIPE_BROKER_URL the state Redis is the broker too: it must be one."""
        if self.broker_url_override is None and self.redis_url is not None:
            check_broker_url(self.redis_url, STATE_VARIABLE)
        return self

    @field_validator("mykaarma_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("must be user:password")
        return value

    @property
    def max_lead_age_seconds(self) -> float:
        return self.max_lead_age_hours * 3600.0

    def require_mykaarma_credentials(self) -> tuple[str, SecretStr]:
        """The basic-auth pair a delivering worker needs, or a clear refusal to start."""
        if not self.mykaarma_username or self.mykaarma_password is None:
            raise SettingsError(
                "MYKAARMA_USERNAME and MYKAARMA_PASSWORD must be set for a worker that "
                "delivers leads to myKaarma (the service subscriber's credentials)."
            )
        return self.mykaarma_username, self.mykaarma_password


def load_settings(**overrides: object) -> Settings:
    """Read the environment; turn pydantic's error into one naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            name = str(error["loc"][0]) if error["loc"] else ""
            if not message.startswith(name):  # a check of several names them itself
                message = f"{name}: {message}"
            problems.append(message)
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
