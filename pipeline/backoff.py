"""The retry delay policy: capped exponential backoff with full jitter, and Retry-After.

Pure functions, no clock and no broker, so the policy is testable on its own (the
shape of Dramatiq's `common.compute_backoff`). The task layer passes the attempt that
just failed (1-based) and the settings; it never computes a delay itself.
"""

from __future__ import annotations

import math
import random

#: Longest `Retry-After` honoured, seconds. myKaarma's `Retry-After` wins over the
#: backoff cap (the server knows best when it will be back), but one hour bounds a
#: buggy or hostile header: a lead parked for a day would look lost to its partner.
RETRY_AFTER_CAP_SECONDS = 3600.0

#: Jitter source when the caller brings none. Random, not cryptographic (ruff S311).
_DEFAULT_RNG = random.Random()


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The delay without jitter after failed attempt `attempt` (1-based).

    That is `min(cap, base * 2**(attempt-1))`, the upper bound of the jittered delay.
    Huge attempts do not overflow: once the power of two leaves the float range the
    answer is simply `cap`.
    """
    _check_policy(attempt, base=base, cap=cap)
    try:
        exponential = math.ldexp(base, attempt - 1)  # base * 2**(attempt-1), exactly
    except OverflowError:
        return cap
    return min(cap, exponential)


def compute_backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: bool = True,
    retry_after: float | None = None,
    retry_after_cap: float = RETRY_AFTER_CAP_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt, after failed attempt `attempt` (1-based).

    - exponential: `base * 2**(attempt-1)`, capped at `cap`;
    - full jitter (`jitter=True`): uniform in `[0, that]`, so that many leads failing
      together do not come back together;
    - `retry_after` (seconds, from the server) wins when it is larger, even above
      `cap`, but is itself bounded by `retry_after_cap`; a negative value counts as 0
      and NaN as absent.
    """
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    generator = rng if rng is not None else _DEFAULT_RNG
    delay = generator.uniform(0.0, ceiling) if jitter else ceiling
    if retry_after is not None and not math.isnan(retry_after):
        honoured = min(max(retry_after, 0.0), retry_after_cap)
        delay = max(delay, honoured)
    return delay


def _check_policy(attempt: int, *, base: float, cap: float) -> None:
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not (math.isfinite(base) and base > 0):
        raise ValueError(f"base must be a positive number of seconds, got {base}")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be a positive number of seconds, got {cap}")
