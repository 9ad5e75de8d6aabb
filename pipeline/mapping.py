"""A resolved lead and its route -> the JSON body of myKaarma's "Insert leads" request.

`build_mykaarma_request` runs once per delivery, so it builds plain dicts and does no
pydantic validation; `validate_mykaarma_request` checks a body against the strict
request model (`pipeline.mykaarma`) and is what tests and `leadpipe validate` use.
Keys whose value is unknown are left out rather than sent as null.
"""

from __future__ import annotations

from typing import Any

from pipeline.lead import ResolvedLead, VehicleIdMethod
from pipeline.mykaarma import MyKaarmaLeadRequest
from pipeline.routing import Route, Service

#: The UTM parameter that names the marketing campaign (`campaign.name` and `.code`).
UTM_CAMPAIGN = "utm_campaign"
#: `customer.addresses[].type` for the one address we know (its state): myKaarma's
#: catch-all type, since we cannot tell a home from a billing address.
ADDRESS_TYPE = "COMMON"

_REQUIRED_BY_METHOD: dict[VehicleIdMethod, tuple[str, ...]] = {
    VehicleIdMethod.VIN: ("vin",),
    VehicleIdMethod.MAKE_MODEL_YEAR: ("make", "model", "year"),
    VehicleIdMethod.PLATE_STATE: ("license_plate", "state"),
}


def build_mykaarma_request(lead: ResolvedLead, route: Route, lead_id: str) -> dict[str, Any]:
    """The request body for `lead`, ready for `json.dumps`.

    The vehicle carries the identification `lead.method` chose and every other vehicle
    value the lead holds (a VIN lead may also know its make and year). Raises
    `ValueError` when the lead lacks the fields its own method needs (a bug upstream).
    """
    missing = [name for name in _REQUIRED_BY_METHOD[lead.method] if not getattr(lead, name)]
    if missing:
        raise ValueError(
            f"lead {lead_id}: vehicle identified by {lead.method.value} but "
            f"{', '.join(missing)} missing"
        )

    vehicle: dict[str, Any] = {}
    if lead.vin:
        vehicle["vin"] = lead.vin
    if lead.year is not None:
        vehicle["vehicleYear"] = str(lead.year)
    if lead.make:
        vehicle["vehicleMake"] = lead.make
    if lead.model:
        vehicle["vehicleModel"] = lead.model
    if lead.license_plate:
        vehicle["licensePlate"] = lead.license_plate
    vehicle["estimatedMileage"] = str(lead.mileage)

    dealer: dict[str, Any] = {}
    if route.dealer_name is not None:
        dealer["name"] = route.dealer_name
    if route.dealer_code is not None:
        dealer["code"] = route.dealer_code
    dealer["source"] = route.source

    body: dict[str, Any] = {
        "customer": {
            "firstName": lead.first_name,
            "lastName": lead.last_name,
            "emails": [{"emailAddress": lead.email, "okToEmail": True, "isPreferred": True}],
            "addresses": [{"state": lead.state, "type": ADDRESS_TYPE}],
        },
        "vehicle": vehicle,
        "dealerDetails": dealer,
        "services": [_service(service) for service in route.services],
        "status": "NEW",
        "leadId": lead_id,
        "leadType": route.lead_type,
    }
    if lead.transaction_id:
        body["webId"] = lead.transaction_id
    campaign = lead.utm.get(UTM_CAMPAIGN, "").strip()
    if campaign:
        body["campaign"] = {"name": campaign, "code": campaign}
    return body


def _service(service: Service) -> dict[str, str]:
    item = {"code": service.code}
    if service.name is not None:
        item["name"] = service.name
    if service.type is not None:
        item["type"] = service.type
    if service.due_date is not None:
        item["dueDate"] = service.due_date
    return item


def validate_mykaarma_request(body: dict[str, Any]) -> MyKaarmaLeadRequest:
    """Check `body` against myKaarma's request schema; raises `pydantic.ValidationError`."""
    return MyKaarmaLeadRequest.model_validate(body)
