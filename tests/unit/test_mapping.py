"""ResolvedLead + Route -> myKaarma request body (CONTRACT section 4)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.lead import ResolvedLead, VehicleIdMethod
from pipeline.mapping import build_mykaarma_request, validate_mykaarma_request
from pipeline.routing import DEFAULT_SERVICES, LEAD_TYPES, SOURCES, Route, Service

LEAD_ID = "6f1c2d7e-0000-4000-8000-000000000001"

ROUTE = Route(
    dealer_uuid="d-0001",
    dealer_name="Main Street Motors",
    dealer_code="MSM",
    source="MMC",
    lead_type="SERVICE_DEMAND",
    services=DEFAULT_SERVICES,
    section="defaults",
)

VIN_LEAD = ResolvedLead(
    first_name="Ada",
    last_name="Lovelace",
    email="ada@example.com",
    state="NY",
    mileage=42_000,
    method=VehicleIdMethod.VIN,
    vin="1HGCM82633A004352",
    make="Honda",
    year=2003,
    partner="acme",
    transaction_id="tx-1",
    utm={"utm_source": "acme", "utm_campaign": "spring-2025"},
)
MMY_LEAD = ResolvedLead(
    first_name="Alan",
    last_name="Turing",
    email="alan@example.com",
    state="TX",
    mileage=120_500,
    method=VehicleIdMethod.MAKE_MODEL_YEAR,
    make="Toyota",
    model="Camry",
    year=2019,
)
PLATE_LEAD = ResolvedLead(
    first_name="Grace",
    last_name="Hopper",
    email="grace@example.com",
    state="CA",
    mileage=1,
    method=VehicleIdMethod.PLATE_STATE,
    license_plate="7ABC123",
)


def build(lead: ResolvedLead, route: Route = ROUTE) -> dict[str, Any]:
    body = build_mykaarma_request(lead, route, LEAD_ID)
    validate_mykaarma_request(body)  # every body we build is one myKaarma accepts
    return body


def test_vin_lead_full_body():
    assert build(VIN_LEAD) == {
        "customer": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "emails": [{"emailAddress": "ada@example.com", "okToEmail": True, "isPreferred": True}],
            "addresses": [{"state": "NY", "type": "COMMON"}],
        },
        "vehicle": {
            "vin": "1HGCM82633A004352",
            "vehicleYear": "2003",  # decoded from the VIN, sent along
            "vehicleMake": "Honda",
            "estimatedMileage": "42000",
        },
        "dealerDetails": {"name": "Main Street Motors", "code": "MSM", "source": "MMC"},
        "services": [{"code": "VSC", "name": "Vehicle service contract"}],
        "status": "NEW",
        "leadId": LEAD_ID,
        "leadType": "SERVICE_DEMAND",
        "webId": "tx-1",
        "campaign": {"name": "spring-2025", "code": "spring-2025"},
    }


def test_make_model_year_lead():
    body = build(MMY_LEAD)
    assert body["vehicle"] == {
        "vehicleYear": "2019",
        "vehicleMake": "Toyota",
        "vehicleModel": "Camry",
        "estimatedMileage": "120500",
    }
    assert "webId" not in body
    assert "campaign" not in body


def test_plate_lead():
    body = build(PLATE_LEAD)
    assert body["vehicle"] == {"licensePlate": "7ABC123", "estimatedMileage": "1"}
    assert body["customer"]["addresses"] == [{"state": "CA", "type": "COMMON"}]


def test_year_and_mileage_are_strings():
    vehicle = build(MMY_LEAD)["vehicle"]
    assert isinstance(vehicle["vehicleYear"], str)
    assert isinstance(vehicle["estimatedMileage"], str)


def test_an_int_year_would_not_validate():
    body = build(MMY_LEAD)
    body["vehicle"]["vehicleYear"] = 2019
    with pytest.raises(ValidationError, match="vehicleYear"):
        validate_mykaarma_request(body)


def test_every_usable_vehicle_value_is_sent():
    lead = replace(VIN_LEAD, model="Accord", license_plate="XYZ123")
    vehicle = build(lead)["vehicle"]
    assert vehicle["vin"] == "1HGCM82633A004352"
    assert vehicle["vehicleModel"] == "Accord"
    assert vehicle["licensePlate"] == "XYZ123"


@pytest.mark.parametrize(
    ("utm", "campaign"),
    [
        ({"utm_campaign": "lead-gen"}, {"name": "lead-gen", "code": "lead-gen"}),
        ({"utm_campaign": "  lead-gen "}, {"name": "lead-gen", "code": "lead-gen"}),
        ({"utm_source": "acme"}, None),
        ({"utm_campaign": ""}, None),
        ({}, None),
    ],
)
def test_campaign_from_utm(utm, campaign):
    body = build(replace(MMY_LEAD, utm=utm))
    assert body.get("campaign") == campaign


def test_dealer_details_services_and_lead_type_come_from_the_route():
    route = Route(
        dealer_uuid="d-9",
        dealer_name=None,
        dealer_code=None,
        source="BMW_SPARC",
        lead_type="RECALL",
        services=(
            Service(code="R1", name="Recall", type="RECALL", due_date="2030-01-31"),
            Service(code="R2"),
        ),
        section="partners.bmwco",
    )
    body = build(MMY_LEAD, route)
    assert body["dealerDetails"] == {"source": "BMW_SPARC"}  # no null name/code
    assert body["services"] == [
        {"code": "R1", "name": "Recall", "type": "RECALL", "dueDate": "2030-01-31"},
        {"code": "R2"},
    ]
    assert body["leadType"] == "RECALL"


def test_no_none_anywhere():
    def walk(value: object) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        else:
            assert value is not None

    for lead in (VIN_LEAD, MMY_LEAD, PLATE_LEAD):
        walk(build(lead))


@pytest.mark.parametrize(
    "lead",
    [
        replace(VIN_LEAD, vin=None),
        replace(MMY_LEAD, model=None),
        replace(PLATE_LEAD, license_plate=None),
    ],
)
def test_a_lead_without_its_own_identification_is_a_bug(lead):
    with pytest.raises(ValueError, match=f"lead {LEAD_ID}: vehicle identified by"):
        build_mykaarma_request(lead, ROUTE, LEAD_ID)


def test_the_body_is_json_ready():
    body = build(VIN_LEAD)
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("status",), "OPEN", "status"),
        (("leadType",), "SALES", "leadType"),
        (("dealerDetails", "source"), "SPARC", "dealerDetails.source"),
        (("services",), [], "services"),
        (("services",), [{"name": "no code"}], "services.0.code"),
        (("vehicle", "mileage"), "1", "vehicle.mileage"),
        (("customer", "emails"), [{"emailAddress": "a@b.c", "okToEmail": "yes"}], "okToEmail"),
    ],
)
def test_the_request_model_catches_mistakes(path, value, field):
    body = build(MMY_LEAD)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError) as caught:
        validate_mykaarma_request(body)
    assert field in str(caught.value)


# --- property: every lead and route give a valid body ----------------------------------

names = st.text(min_size=1, max_size=50).filter(str.strip)
upper = st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=1, max_size=8)
states = st.sampled_from(["NY", "TX", "CA", "DC", "PR"])


@st.composite
def resolved_leads(draw):
    method = draw(st.sampled_from(list(VehicleIdMethod)))
    vin = draw(st.from_regex(r"[A-HJ-NPR-Z0-9]{17}", fullmatch=True))
    make, model = draw(names), draw(names)
    year = draw(st.integers(min_value=1990, max_value=2030))
    plate = draw(upper)
    optional = draw(st.booleans())
    return ResolvedLead(
        first_name=draw(names),
        last_name=draw(names),
        email=draw(st.emails()),
        state=draw(states),
        mileage=draw(st.integers(min_value=1, max_value=250_000)),
        method=method,
        vin=vin if method is VehicleIdMethod.VIN or optional else None,
        make=make if method is VehicleIdMethod.MAKE_MODEL_YEAR or optional else None,
        model=model if method is VehicleIdMethod.MAKE_MODEL_YEAR or optional else None,
        year=year if method is VehicleIdMethod.MAKE_MODEL_YEAR or optional else None,
        license_plate=plate if method is VehicleIdMethod.PLATE_STATE or optional else None,
        partner=draw(st.none() | names),
        transaction_id=draw(st.none() | st.text(max_size=64)),
        utm=draw(st.dictionaries(st.sampled_from(["utm_source", "utm_campaign"]), st.text())),
    )


services = st.builds(
    Service,
    code=names,
    name=st.none() | names,
    type=st.none() | names,
    due_date=st.none() | st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
)
routes = st.builds(
    Route,
    dealer_uuid=names,
    dealer_name=st.none() | names,
    dealer_code=st.none() | names,
    source=st.sampled_from(SOURCES),
    lead_type=st.sampled_from(LEAD_TYPES),
    services=st.lists(services, min_size=1, max_size=3).map(tuple),
    section=st.just("defaults"),
)


@given(lead=resolved_leads(), route=routes, lead_id=names)
def test_every_mapped_body_validates(lead, route, lead_id):
    body = build_mykaarma_request(lead, route, lead_id)
    request = validate_mykaarma_request(body)

    # The contract's minimum is there, whatever the lead
    assert request.customer is not None
    assert request.customer.first_name == lead.first_name
    assert request.customer.last_name == lead.last_name
    assert request.customer.emails is not None
    assert request.customer.emails[0].email_address == lead.email
    assert request.vehicle is not None
    assert request.vehicle.estimated_mileage == str(lead.mileage)
    if lead.method is VehicleIdMethod.VIN:
        assert request.vehicle.vin == lead.vin
    elif lead.method is VehicleIdMethod.MAKE_MODEL_YEAR:
        assert request.vehicle.vehicle_make == lead.make
        assert request.vehicle.vehicle_model == lead.model
        assert request.vehicle.vehicle_year == str(lead.year)
    else:
        assert request.vehicle.license_plate == lead.license_plate
    assert request.dealer_details.source == route.source
    assert [s.code for s in request.services] == [s.code for s in route.services]
    assert request.status == "NEW"
    assert request.lead_type == route.lead_type
    assert request.lead_id == lead_id
    assert request.web_id == (lead.transaction_id or None)
    campaign = lead.utm.get("utm_campaign", "").strip()
    if campaign:
        assert request.campaign is not None
        assert (request.campaign.name, request.campaign.code) == (campaign, campaign)
    else:
        assert request.campaign is None
    assert json.loads(json.dumps(body)) == body
