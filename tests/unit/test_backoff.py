"""The retry delay policy: exponential, capped, full jitter, Retry-After honoured up to an hour."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.backoff import RETRY_AFTER_CAP_SECONDS, backoff_ceiling, compute_backoff


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "expected"),
    [
        (1, 2.0, 600.0, 2.0),
        (2, 2.0, 600.0, 4.0),
        (3, 2.0, 600.0, 8.0),
        (8, 2.0, 600.0, 256.0),
        (9, 2.0, 600.0, 512.0),
        (10, 2.0, 600.0, 600.0),
        (50, 2.0, 600.0, 600.0),
        (1, 0.05, 0.2, 0.05),
        (3, 0.05, 0.2, 0.2),
        (1, 10.0, 5.0, 5.0),  # a base above the cap is capped from the first attempt
    ],
)
def test_ceiling_table(attempt, base, cap, expected):
    assert backoff_ceiling(attempt, base=base, cap=cap) == pytest.approx(expected)
    assert compute_backoff(attempt, base=base, cap=cap, jitter=False) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1024, 1025, 10_000, 10**30])
def test_huge_attempts_do_not_overflow(attempt):
    assert backoff_ceiling(attempt, base=2.0, cap=600.0) == 600.0
    delay = compute_backoff(attempt, base=2.0, cap=600.0)
    assert 0.0 <= delay <= 600.0


def test_jitter_is_uniform_below_the_ceiling():
    rng = random.Random(1234)
    delays = [compute_backoff(4, base=2.0, cap=600.0, rng=rng) for _ in range(2000)]
    assert all(0.0 <= d <= 16.0 for d in delays)
    # Full jitter spreads over the whole range, not a band near the ceiling.
    assert min(delays) < 1.0
    assert max(delays) > 15.0
    assert 6.0 < sum(delays) / len(delays) < 10.0


def test_same_seed_same_delays():
    first = [compute_backoff(a, base=1.0, cap=60.0, rng=random.Random(7)) for a in range(1, 9)]
    again = [compute_backoff(a, base=1.0, cap=60.0, rng=random.Random(7)) for a in range(1, 9)]
    assert first == again


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (30.0, 30.0),  # larger than the 4 s ceiling: wins
        (1200.0, 1200.0),  # wins even above the 600 s cap
        (7200.0, RETRY_AFTER_CAP_SECONDS),  # but no more than an hour
        (math.inf, RETRY_AFTER_CAP_SECONDS),
        (1.0, 4.0),  # smaller than the backoff: the backoff stands
        (-5.0, 4.0),  # negative counts as 0
        (math.nan, 4.0),  # NaN counts as absent
        (None, 4.0),
    ],
)
def test_retry_after(retry_after, expected):
    delay = compute_backoff(2, base=2.0, cap=600.0, jitter=False, retry_after=retry_after)
    assert delay == expected


def test_retry_after_cap_is_one_hour():
    assert RETRY_AFTER_CAP_SECONDS == 3600.0


def test_retry_after_cap_can_be_lowered():
    delay = compute_backoff(1, base=1.0, cap=10.0, retry_after=500.0, retry_after_cap=60.0)
    assert delay == 60.0


@pytest.mark.parametrize(
    ("attempt", "base", "cap"),
    [(0, 1.0, 1.0), (-1, 1.0, 1.0), (1, 0.0, 1.0), (1, -1.0, 1.0), (1, 1.0, 0.0), (1, math.nan, 1)],
)
def test_bad_policy_is_refused(attempt, base, cap):
    with pytest.raises(ValueError):
        compute_backoff(attempt, base=base, cap=cap)


@given(
    attempt=st.integers(min_value=1, max_value=10**6),
    base=st.floats(min_value=1e-3, max_value=1e4),
    cap=st.floats(min_value=1e-3, max_value=1e5),
    retry_after=st.none() | st.floats(min_value=-1e9, max_value=1e9),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_stays_within_the_policy(attempt, base, cap, retry_after, seed):
    delay = compute_backoff(
        attempt, base=base, cap=cap, retry_after=retry_after, rng=random.Random(seed)
    )
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    honoured = 0.0 if retry_after is None else min(max(retry_after, 0.0), RETRY_AFTER_CAP_SECONDS)
    assert ceiling <= cap
    assert 0.0 <= delay <= max(ceiling, honoured)
    assert delay >= honoured  # Retry-After wins whenever it is larger
    assert math.isfinite(delay)


@given(attempt=st.integers(min_value=1, max_value=2000))
def test_ceiling_never_decreases(attempt):
    assert backoff_ceiling(attempt + 1, base=0.5, cap=900.0) >= backoff_ceiling(
        attempt, base=0.5, cap=900.0
    )
