"""The routing file: lookup order, merging with [defaults], validation, live reload."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path
from typing import get_args

import pytest

from pipeline.errors import RoutingFileError
from pipeline.mykaarma import LeadType, Source
from pipeline.routing import (
    DEFAULT_LEAD_TYPE,
    DEFAULT_SERVICES,
    DEFAULT_SOURCE,
    LEAD_TYPES,
    NO_ROUTES,
    SOURCES,
    Route,
    RoutingDocument,
    RoutingFile,
    RoutingTable,
    Service,
    StaticRouting,
    load_routing,
    open_routing,
    parse_routing,
)
from pipeline.routing import schema as routing_schema
from pipeline.routing.schema import DefaultsSection, PartnerSection, ServiceSpec, StateSection

CONTRACT_EXAMPLE = """
[defaults]
dealer_uuid = "d-0001"
dealer_name = "Main Street Motors"
dealer_code = "MSM"
source = "MMC"
lead_type = "SERVICE_DEMAND"
services = [{ code = "VSC", name = "Vehicle service contract" }]

[partners.acme]
dealer_uuid = "d-0002"

[states.TX]
dealer_uuid = "d-0003"
"""


def table(text: str) -> RoutingTable:
    return parse_routing(textwrap.dedent(text), origin="routes.toml")


def problem(text: str) -> str:
    with pytest.raises(RoutingFileError) as caught:
        table(text)
    return str(caught.value)


# --- lookup -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partner", "state", "dealer", "section"),
    [
        ("acme", "TX", "d-0002", "partners.acme"),  # partner beats state
        ("acme", None, "d-0002", "partners.acme"),
        ("other", "TX", "d-0003", "states.TX"),  # unknown partner: by state
        (None, "TX", "d-0003", "states.TX"),
        (None, "tx", "d-0003", "states.TX"),  # state looked up case-insensitively
        ("other", "CA", "d-0001", "defaults"),
        (None, None, "d-0001", "defaults"),
        ("ACME", "CA", "d-0001", "defaults"),  # partner ids match exactly
    ],
)
def test_lookup_order(partner, state, dealer, section):
    route = table(CONTRACT_EXAMPLE).route(partner, state)
    assert route is not None
    assert (route.dealer_uuid, route.section) == (dealer, section)


def test_sections_inherit_every_unset_key_from_defaults():
    route = table(CONTRACT_EXAMPLE).route("acme", None)
    assert route == Route(
        dealer_uuid="d-0002",
        dealer_name="Main Street Motors",
        dealer_code="MSM",
        source="MMC",
        lead_type="SERVICE_DEMAND",
        services=(Service(code="VSC", name="Vehicle service contract"),),
        section="partners.acme",
    )


def test_a_section_overrides_any_key():
    routes = table(
        """
        [defaults]
        dealer_uuid = "d-1"
        dealer_name = "Default Motors"

        [partners.bmwco]
        dealer_uuid = "d-9"
        dealer_name = "Bavaria"
        dealer_code = "BAV"
        source = "BMW_SPARC"
        lead_type = "RECALL"
        services = [{ code = "R1", name = "Recall", type = "RECALL", due_date = "2030-01-31" },
                    { code = "R2", due_date = 2030-02-28 }]
        """
    )
    route = routes.route("bmwco", "NY")
    assert route is not None
    assert route.dealer_name == "Bavaria"
    assert route.dealer_code == "BAV"
    assert route.source == "BMW_SPARC"
    assert route.lead_type == "RECALL"
    assert route.services == (
        Service(code="R1", name="Recall", type="RECALL", due_date="2030-01-31"),
        Service(code="R2", due_date="2030-02-28"),  # a TOML date becomes yyyy-mm-dd
    )


def test_built_in_defaults_fill_what_the_file_leaves_out():
    route = table('[defaults]\ndealer_uuid = "d-1"').route(None, None)
    assert route is not None
    assert route.source == DEFAULT_SOURCE == "MMC"
    assert route.lead_type == DEFAULT_LEAD_TYPE == "SERVICE_DEMAND"
    assert route.services == DEFAULT_SERVICES
    assert (Service(code="VSC", name="Vehicle service contract"),) == DEFAULT_SERVICES
    assert route.dealer_name is None
    assert route.dealer_code is None


def test_no_defaults_and_no_match_is_unroutable():
    routes = table(
        """
        [partners.acme]
        dealer_uuid = "d-2"
        """
    )
    assert routes.route("acme", None) is not None
    assert routes.route("other", "TX") is None
    assert routes.route(None, None) is None


@pytest.mark.parametrize("text", ["", "# nothing routed yet\n"])
def test_an_empty_file_routes_nothing(text):
    routes = table(text)
    assert routes.is_empty
    assert routes.route("acme", "TX") is None


def test_no_routes_routes_nothing():
    assert NO_ROUTES.is_empty
    assert NO_ROUTES.route("acme", "TX") is None
    assert NO_ROUTES.route(None, None) is None
    assert open_routing(None).current() is NO_ROUTES
    assert StaticRouting().current() is NO_ROUTES


def test_open_routing_with_a_path_reads_the_file(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text(CONTRACT_EXAMPLE)
    source = open_routing(path)
    assert isinstance(source, RoutingFile)
    route = source.current().route("acme", None)
    assert route is not None
    assert route.dealer_uuid == "d-0002"


def test_partner_names_that_need_quotes():
    routes = table(
        """
        [defaults]
        dealer_uuid = "d-1"
        [partners."acme.co uk"]
        dealer_uuid = "d-5"
        """
    )
    route = routes.route("acme.co uk", None)
    assert route is not None
    assert route.section == 'partners."acme.co uk"'


def test_a_section_without_a_dealer_is_read_and_its_leads_are_unroutable():
    # Given sections that name no dealer, while [defaults] names none either
    routes = table(
        """
        [defaults]
        source = "MMC"
        [partners.acme]
        lead_type = "RECALL"
        [states.NY]
        lead_type = "RECALL"
        [states.TX]
        dealer_uuid = "d-3"
        """
    )
    # Then the file is not refused: those leads end unroutable (CONTRACT section 5)
    assert routes.route("acme", None) is None
    assert routes.route("other", "NY") is None
    # And the chosen section decides: acme's leads do not fall through to their state
    assert routes.route("acme", "TX") is None
    # While the rest of the file routes
    route = routes.route("other", "TX")
    assert route is not None and route.dealer_uuid == "d-3"
    assert not routes.is_empty
    # And the operator is told which sections route nowhere
    assert routes.warnings == (
        "partners.acme: no dealer_uuid here nor in [defaults]: unroutable",
        "states.NY: no dealer_uuid here nor in [defaults]: unroutable",
    )


def test_only_sections_without_a_dealer_route_nothing():
    routes = table('[partners.acme]\nlead_type = "RECALL"')
    assert routes.is_empty
    assert routes.route("acme", "TX") is None


def test_a_loaded_file_logs_its_unroutable_sections_once(tmp_path, caplog):
    path = tmp_path / "routes.toml"
    write(path, '[partners.acme]\nlead_type = "RECALL"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)
    with caplog.at_level(logging.WARNING, logger="pipeline.routing"):
        for _ in range(3):
            assert source.current().route("acme", None) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"routing file {path}: partners.acme: no dealer_uuid here nor in [defaults]: unroutable"
    ]


def test_routing_enums_are_mykaarmas():
    assert get_args(Source) == SOURCES
    assert get_args(LeadType) == LEAD_TYPES
    for source in SOURCES:
        assert table(f'[defaults]\ndealer_uuid = "d"\nsource = "{source}"').route(None, None)
    for lead_type in LEAD_TYPES:
        assert table(f'[defaults]\ndealer_uuid = "d"\nlead_type = "{lead_type}"').route(None, None)


def test_schema_models_forbid_unknown_keys():
    for model in (RoutingDocument, DefaultsSection, PartnerSection, StateSection, ServiceSpec):
        assert model.model_config.get("extra") == "forbid"


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[defaults\ndealer_uuid = "d"', "routes.toml is not valid TOML"),
        (
            '[default]\ndealer_uuid = "d"',
            "default: unknown key (expected one of defaults, partners, states, dealers)",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\ndealer = "x"',
            "defaults.dealer: unknown key (expected one of dealer_uuid",
        ),
        (
            "[defaults]\ndealer_uuid = 42",
            "defaults.dealer_uuid: must be a non-empty string, got an integer 42",
        ),
        ('[defaults]\ndealer_uuid = "  "', "defaults.dealer_uuid: must be a non-empty string"),
        (
            '[defaults]\ndealer_uuid = "d"\ndealer_name = true',
            "defaults.dealer_name: must be a non-empty string, got a boolean True",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nsource = "SPARC"',
            "defaults.source: must be one of MMC, BMW_SPARC, AUTOPOINT, got 'SPARC'",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nlead_type = "SALES"',
            "defaults.lead_type: must be one of RECALL, SERVICE_DEMAND, got 'SALES'",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = []',
            "defaults.services: must list at least one service",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = "VSC"',
            "defaults.services: must be an array of tables",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = [{ name = "no code" }]',
            "defaults.services[0]: missing code",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = [{ code = "" }]',
            "defaults.services[0].code: must be a non-empty string",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = [{ code = "A" }, "B"]',
            "defaults.services[1]: must be a table",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = [{ code = "A", price = 3 }]',
            "defaults.services[0].price: unknown key",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = [{ code = "A", due_date = "31/01/2030" }]',
            "defaults.services[0].due_date: must be a date as yyyy-mm-dd, got '31/01/2030'",
        ),
        (
            '[defaults]\ndealer_uuid = "d"\nservices = [{ code = "A", due_date = "2030-02-30" }]',
            "defaults.services[0].due_date: must be a date as yyyy-mm-dd",
        ),
        (
            '[states.Texas]\ndealer_uuid = "d"',
            "states.Texas: a state section must be named by a two-letter",
        ),
        (
            '[states.T1]\ndealer_uuid = "d"',
            "states.T1: a state section must be named by a two-letter",
        ),
        ('[states.ZZ]\ndealer_uuid = "d"', "states.ZZ: ZZ is not a US state code"),
        (
            '[states.tx]\ndealer_uuid = "d"\n[states.TX]\ndealer_uuid = "e"',
            "states.TX: duplicates states.tx",
        ),
        ('defaults = "d-1"', "defaults: must be a table"),
        ('partners = "acme"', "partners: must be a table of [partners.<name>] sections"),
        ('[partners]\nacme = "d-2"', "partners.acme: must be a table"),
    ],
)
def test_every_bad_file_names_the_file_and_the_key(text, expected):
    message = problem(text)
    assert "routes.toml" in message
    assert expected in message


def test_every_problem_is_reported_at_once():
    message = problem(
        """
        [defaults]
        dealer_uuid = "d"
        source = "X"
        [partners.acme]
        lead_type = "Y"
        [states.ABC]
        dealer_uuid = "e"
        """
    )
    assert "defaults.source" in message
    assert "partners.acme.lead_type" in message
    assert "states.ABC" in message


def test_load_routing_names_a_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(RoutingFileError, match=r"cannot read routing file .*nope\.toml"):
        load_routing(missing)


def test_load_routing_refuses_non_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[defaults]\ndealer_name = "M\xfcller"\n')
    with pytest.raises(RoutingFileError, match=r"latin1\.toml is not UTF-8"):
        load_routing(path)


def test_load_routing_reads_the_contract_example(tmp_path):
    path = tmp_path / "routes.toml"
    path.write_text(CONTRACT_EXAMPLE)
    routes = load_routing(path)
    assert routes.origin == str(path)
    route = routes.route(None, "TX")
    assert route is not None
    assert route.dealer_uuid == "d-0003"


# --- RoutingFile: live reload -----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, *, mtime_ns: int) -> None:
    """Write and set an explicit mtime, so a change never hides in the clock's resolution."""
    path.write_text(textwrap.dedent(text))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def dealer(source: RoutingFile, partner: str | None = None) -> str | None:
    route = source.current().route(partner, None)
    return None if route is None else route.dealer_uuid


def test_reloads_when_the_file_changes(tmp_path):
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)
    assert dealer(source) == "d-1"

    # When the file is edited in place
    write(path, '[defaults]\ndealer_uuid = "d-2"', mtime_ns=2_000_000_000)
    # Then the next lead sees the new version
    assert dealer(source) == "d-2"


def test_reloads_after_an_atomic_rename(tmp_path):
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)
    assert dealer(source) == "d-1"

    # When a new version is renamed over the old one, keeping size and mtime
    new = tmp_path / "routes.toml.new"
    write(new, '[defaults]\ndealer_uuid = "d-9"', mtime_ns=1_000_000_000)
    os.replace(new, path)
    # Then the new inode gives it away
    assert dealer(source) == "d-9"


def test_an_unchanged_file_is_not_parsed_again(tmp_path, monkeypatch):
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)
    first = source.current()

    def fail(*args, **kwargs):
        raise AssertionError("parsed an unchanged file")

    monkeypatch.setattr(routing_schema, "parse_routing", fail)
    assert source.current() is first


def test_stat_is_rate_limited(tmp_path):
    clock = FakeClock()
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0.5, clock=clock)
    assert dealer(source) == "d-1"

    # Given an edit within the check interval
    write(path, '[defaults]\ndealer_uuid = "d-2"', mtime_ns=2_000_000_000)
    clock.now += 0.4
    # Then the old table is still served without looking at the file
    assert dealer(source) == "d-1"
    # And once the interval has passed the edit is seen
    clock.now += 0.2
    assert dealer(source) == "d-2"


def test_keeps_the_last_good_version_and_logs_once(tmp_path, caplog):
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)
    assert dealer(source) == "d-1"

    # When a broken version is written
    write(path, '[defaults]\ndealer_uuid = "d-2"\nsource = "NOPE"', mtime_ns=2_000_000_000)
    with caplog.at_level(logging.ERROR, logger="pipeline.routing"):
        for _ in range(5):
            # Then the last good table stays in force
            assert dealer(source) == "d-1"
    # And the problem is logged once, naming the file and the key
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage()
    assert "defaults.source" in errors[0].getMessage()
    assert "keeping the last good version" in errors[0].getMessage()

    # When a second, differently broken version follows, it is logged too
    caplog.clear()
    write(path, "[defaults", mtime_ns=3_000_000_000)
    with caplog.at_level(logging.ERROR, logger="pipeline.routing"):
        assert dealer(source) == "d-1"
    assert len(caplog.records) == 1
    assert "not valid TOML" in caplog.records[0].getMessage()

    # When the file is fixed, the fix takes effect
    write(path, '[defaults]\ndealer_uuid = "d-3"', mtime_ns=4_000_000_000)
    assert dealer(source) == "d-3"


def test_keeps_the_last_good_version_when_the_file_disappears(tmp_path, caplog):
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)
    assert dealer(source) == "d-1"

    moved = tmp_path / "aside.toml"
    path.rename(moved)
    with caplog.at_level(logging.ERROR, logger="pipeline.routing"):
        assert dealer(source) == "d-1"
        assert dealer(source) == "d-1"
    assert len(caplog.records) == 1
    assert "cannot read routing file" in caplog.records[0].getMessage()

    # When the same file comes back and then goes away again, that is logged again
    moved.rename(path)
    assert dealer(source) == "d-1"
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="pipeline.routing"):
        assert dealer(source) == "d-1"
    assert len(caplog.records) == 2


def test_raises_while_no_good_version_was_ever_loaded(tmp_path, caplog):
    path = tmp_path / "routes.toml"
    write(path, '[defaults]\ndealer_uuid = ""', mtime_ns=1_000_000_000)
    source = RoutingFile(path, check_interval=0)

    with caplog.at_level(logging.ERROR, logger="pipeline.routing"):
        for _ in range(3):
            with pytest.raises(RoutingFileError, match=r"defaults\.dealer_uuid"):
                source.current()
    assert len(caplog.records) == 1  # logged once per bad version, raised every time

    # When the file is fixed, routing starts
    write(path, '[defaults]\ndealer_uuid = "d-1"', mtime_ns=2_000_000_000)
    assert dealer(source) == "d-1"


def test_a_missing_file_raises_until_it_appears(tmp_path):
    path = tmp_path / "later.toml"
    source = RoutingFile(path, check_interval=0)
    with pytest.raises(RoutingFileError, match="cannot read routing file"):
        source.current()
    write(path, '[partners.acme]\ndealer_uuid = "d-7"', mtime_ns=1_000_000_000)
    assert dealer(source, "acme") == "d-7"
