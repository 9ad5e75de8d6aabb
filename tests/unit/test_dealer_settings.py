"""The dealer-health settings (CONTRACT section 2): defaults, fractions, bad values."""

from __future__ import annotations

import pytest

from config import SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings()
    assert (s.max_lead_age_hours, s.breaker_failures, s.breaker_cooldown_seconds) == (72, 5, 30)
    assert s.max_lead_age_seconds == 72 * 3600


def test_fractions_scale_time_down() -> None:
    s = load_settings(
        LEADPIPE_MAX_LEAD_AGE_HOURS="0.0005", LEADPIPE_BREAKER_COOLDOWN_SECONDS="0.05"
    )
    assert s.max_lead_age_seconds == pytest.approx(1.8)
    assert s.breaker_cooldown_seconds == 0.05


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEADPIPE_MAX_LEAD_AGE_HOURS", "0"),
        ("LEADPIPE_MAX_LEAD_AGE_HOURS", "soon"),
        ("LEADPIPE_BREAKER_FAILURES", "0"),
        ("LEADPIPE_BREAKER_FAILURES", "2.5"),
        ("LEADPIPE_BREAKER_COOLDOWN_SECONDS", "-1"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(**{name: value})
