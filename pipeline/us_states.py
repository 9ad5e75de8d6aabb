"""Two-letter codes accepted for `vehicle.state`.

The 50 states, the District of Columbia and the five inhabited territories that
register vehicles under US rules (PR, GU, VI, AS, MP).

Left out on purpose:
- the military mail codes AA, AE and AP: they are USPS routing codes, not places
  that register vehicles or price protection plans;
- the freely associated states FM, MH and PW: sovereign countries with their own
  vehicle registration.
"""

from __future__ import annotations

#: The 50 states.
STATES: frozenset[str] = frozenset(
    {
        "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA",
        "HI", "ID", "IL", "IN", "IA", "KS", "KY", "LA", "ME", "MD",
        "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ",
        "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC",
        "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
    }
)  # fmt: skip

#: Federal district and inhabited territories.
DISTRICT_AND_TERRITORIES: frozenset[str] = frozenset({"DC", "PR", "GU", "VI", "AS", "MP"})

#: Every code `vehicle.state` accepts.
US_STATE_CODES: frozenset[str] = STATES | DISTRICT_AND_TERRITORIES
