"""Which dealer a lead goes to: the routing TOML of CONTRACT section 5.

    [defaults]          used when nothing more specific matches
    [partners.<id>]     by partner id (exact match)
    [states.<XX>]       by the vehicle's two-letter state, when the partner has no section

- `pipeline.routing.table`: `Route`, `Service`, `RoutingTable` and its lookup, the
  built-in defaults, myKaarma's `SOURCES` and `LEAD_TYPES`;
- `pipeline.routing.schema`: the file's pydantic models (`RoutingDocument`) and
  `parse_routing`, which builds a table or lists every problem;
- `pipeline.routing.reload`: `RoutingFile` (reread on change, last good version kept),
  `load_routing`, `open_routing`.
"""

from pipeline.routing.reload import (
    ROUTING_CHECK_INTERVAL_SECONDS,
    RoutingFile,
    RoutingSource,
    StaticRouting,
    load_routing,
    open_routing,
)
from pipeline.routing.schema import RoutingDocument, parse_routing
from pipeline.routing.table import (
    DEFAULT_LEAD_TYPE,
    DEFAULT_SERVICE_CODE,
    DEFAULT_SERVICE_NAME,
    DEFAULT_SERVICES,
    DEFAULT_SOURCE,
    LEAD_TYPES,
    NO_ROUTES,
    SOURCES,
    Route,
    RoutingTable,
    Service,
)

__all__ = [
    "DEFAULT_LEAD_TYPE",
    "DEFAULT_SERVICES",
    "DEFAULT_SERVICE_CODE",
    "DEFAULT_SERVICE_NAME",
    "DEFAULT_SOURCE",
    "LEAD_TYPES",
    "NO_ROUTES",
    "ROUTING_CHECK_INTERVAL_SECONDS",
    "SOURCES",
    "Route",
    "RoutingDocument",
    "RoutingFile",
    "RoutingSource",
    "RoutingTable",
    "Service",
    "StaticRouting",
    "load_routing",
    "open_routing",
    "parse_routing",
]
