"""The pooled HTTP session both senders use: myKaarma's client and the partners'
webhook sender.

One place decides what every outgoing POST shares: no automatic retries (the
pipeline's own backoff decides, with Retry-After and attempt counts in Redis), a
pool that never blocks a thread waiting for a connection, TLS verification always on,
and leadpipe's User-Agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import requests
from requests.adapters import HTTPAdapter

try:
    _VERSION = version("leadpipe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0+unknown"
USER_AGENT = f"leadpipe/{_VERSION}"


def pooled_session(
    *,
    host_pools: int,
    pool_size: int,
    verify: bool | str,
    headers: Mapping[str, str],
) -> requests.Session:
    """A session keeping `pool_size` connections to each of up to `host_pools` hosts."""
    if verify is False:
        raise ValueError("TLS verification cannot be turned off; pass a CA bundle path")
    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=host_pools, pool_maxsize=pool_size, max_retries=0, pool_block=False
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.verify = verify
    session.headers.update({**headers, "User-Agent": USER_AGENT})
    return session
