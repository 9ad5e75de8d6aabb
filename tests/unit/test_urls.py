"""The scheme table of `config.urls` and the settings that use it."""

from __future__ import annotations

import pytest

from config.settings import load_settings
from config.urls import (
    BROKER_VARIABLE,
    SCHEMES,
    STATE_VARIABLE,
    Broker,
    broker_kind,
    check_broker_url,
    check_state_url,
    is_loopback,
    scheme_of,
)
from pipeline.errors import ConfigError, SettingsError


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("redis://h:6379/0", "redis"), ("REDISS://h", "rediss"), ("unix:///r.sock", "unix"),
     ("127.0.0.1:6379", ""), ("", "")],
)  # fmt: skip
def test_scheme_of(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h:6380/1", "unix:///tmp/r.sock"])
def test_state_schemes_are_accepted(url: str) -> None:
    assert check_state_url(url) == url


@pytest.mark.parametrize("url", ["amqp://h//", "http://h", "h:6379", "sentinel://h"])
def test_other_state_urls_are_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(ValueError, match=STATE_VARIABLE):
        check_state_url(url)


@pytest.mark.parametrize(
    ("url", "kind"),
    [("redis://h", Broker.REDIS), ("rediss://h", Broker.REDIS), ("amqp://h//", Broker.AMQP),
     ("amqps://h//", Broker.AMQP), ("pyamqp://h//", Broker.AMQP)],
)  # fmt: skip
def test_broker_schemes_are_accepted_with_their_kind(url: str, kind: Broker) -> None:
    assert check_broker_url(url) == url
    assert broker_kind(url) is kind


def test_unix_is_refused_as_a_broker_naming_the_variable() -> None:
    # kombu has no unix transport: Connection('unix://...') fails in the worker
    assert broker_kind("unix:///tmp/r.sock") is None
    with pytest.raises(ValueError, match=BROKER_VARIABLE) as caught:
        check_broker_url("unix:///tmp/r.sock")
    assert "unix" in str(caught.value)


def test_every_scheme_is_usable_for_something() -> None:
    assert all(s.state or s.broker is not None for s in SCHEMES.values())


def test_settings_refuse_a_unix_broker_url_naming_it() -> None:
    with pytest.raises(SettingsError, match="LEADPIPE_BROKER_URL"):
        load_settings(LEADPIPE_BROKER_URL="unix:///tmp/r.sock")


def test_a_unix_state_redis_needs_a_broker_url_of_its_own() -> None:
    # Given LEADPIPE_REDIS_URL=unix://... the broker would default to it: refused
    with pytest.raises(SettingsError) as caught:
        load_settings(LEADPIPE_REDIS_URL="unix:///tmp/r.sock")
    assert "LEADPIPE_REDIS_URL" in str(caught.value)
    assert "LEADPIPE_BROKER_URL" in str(caught.value)
    assert isinstance(caught.value, ConfigError)
    # ... and accepted with a broker of its own
    settings = load_settings(
        LEADPIPE_REDIS_URL="unix:///tmp/r.sock", LEADPIPE_BROKER_URL="amqp://h//"
    )
    assert settings.redis_url == "unix:///tmp/r.sock"


def test_settings_refuse_an_amqp_state_redis() -> None:
    with pytest.raises(SettingsError, match="LEADPIPE_REDIS_URL must start with"):
        load_settings(LEADPIPE_REDIS_URL="amqp://h//")


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
     ("example.com", False)],
)  # fmt: skip
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback
