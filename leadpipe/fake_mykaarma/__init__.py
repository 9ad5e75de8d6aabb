"""A local stand-in for myKaarma's lead API, for the demo, tests and the benchmark.

- `leadpipe.fake_mykaarma.behaviour`: what it answers (`FakeLeadApi`, behaviour specs
  such as ``"flaky:2,slow:50"``, recorded requests, stored leads);
- `leadpipe.fake_mykaarma.server`: `FakeMyKaarma`, that API served over HTTP on a
  loopback address, with ``/_fake/...`` control endpoints.
"""

from leadpipe.fake_mykaarma.behaviour import (
    DROPPED,
    Behaviour,
    BehaviourError,
    FakeLeadApi,
    check_lead_body,
    parse_behaviour,
)
from leadpipe.fake_mykaarma.server import (
    DEFAULT_PORT,
    LEAD_PATH_PREFIX,
    MAX_BODY_BYTES,
    FakeMyKaarma,
)

__all__ = [
    "DEFAULT_PORT",
    "DROPPED",
    "LEAD_PATH_PREFIX",
    "MAX_BODY_BYTES",
    "Behaviour",
    "BehaviourError",
    "FakeLeadApi",
    "FakeMyKaarma",
    "check_lead_body",
    "parse_behaviour",
]
