"""The one Settings class: every variable of CONTRACT section 2, typed and checked at start.

A bad value stops the process at start-up with a message naming the variable, rather
than failing on the first lead hours later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Total delivery attempts before a transient failure is dead-lettered as `exhausted`.
RETRY_MAX_ATTEMPTS = 8
#: First backoff step, seconds; doubles with each attempt.
RETRY_BASE_SECONDS = 2.0
#: Cap on one backoff delay, seconds (ten minutes: long enough to ride out a deploy).
RETRY_MAX_DELAY_SECONDS = 600.0
#: Connect + read timeout of one POST to myKaarma, seconds.
HTTP_TIMEOUT_SECONDS = 10.0
#: Where the embedded Redis keeps its files.
DEFAULT_HOME = Path(".leadpipe")
#: myKaarma's production API root.
MYKAARMA_BASE_URL = "https://api.mykaarma.com"
#: A lead not in a terminal state and untouched this long is re-enqueued by the sweeper.
#: Ninety seconds keeps the contract's "any live worker takes over within 2 minutes".
LEASE_SECONDS = 90.0
#: Threads delivering to myKaarma per worker: delivery waits on the network, not the CPU.
#: 64 hides a 200 ms myKaarma at ~300 leads/s (`make bench`: 32 capped it at 160/s),
#: at the cost of up to 64 pooled connections to myKaarma per worker.
DELIVER_CONCURRENCY = 64
#: Largest accepted payload (serialized JSON, bytes); larger ones are dead `invalid`.
MAX_PAYLOAD_BYTES = 1_000_000

PositiveSeconds = Annotated[float, Field(gt=0)]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
BROKER_SCHEMES = (*REDIS_SCHEMES, "amqp://", "amqps://", "pyamqp://")


class SettingsError(Exception):
    """The environment holds a value leadpipe cannot run with; the message names it."""


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
    flower_basic_auth: SecretStr | None = Field(default=None, alias="LEADPIPE_FLOWER_BASIC_AUTH")

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
        if value is not None and not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(REDIS_SCHEMES)}")
        return value

    @field_validator("broker_url_override")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(BROKER_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(BROKER_SCHEMES)}")
        return value

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
            name = str(error["loc"][0]) if error["loc"] else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
