"""The lead record's field names: the one list that the stages, the store's Lua
scripts (`store/scripts.py`, as `F.<name>`) and the operator views all use.

The record is one Redis hash per lead (`store/keys.py`: `Keys.lead`). A name added
here is known to the Lua scripts at once; a Lua script naming a field that is not
here fails its unit test (`tests/unit/test_record_fields.py`). Values are text; the
ones marked JSON hold compact JSON (`pipeline/jsontext.dumps`), the ones marked
epoch hold epoch seconds as text.
"""

from __future__ import annotations

from enum import StrEnum


class RecordField(StrEnum):
    """Every field of the lead hash, with who writes it."""

    # -- identity and state (the transition scripts) ---------------------------------
    LEAD_ID = "leadId"  #: the lead id (the ingest message's task id)
    STATE = "state"  #: a `pipeline.states.LeadState` value
    REASON = "reason"  #: a `pipeline.states.DeadReason` value, while dead
    CREATED_AT = "createdAt"  #: epoch; first written
    UPDATED_AT = "updatedAt"  #: epoch; last transition (what the sweeper ages)
    FAILED_AT = "failedAt"  #: epoch; when it went dead
    DELIVERED_AT = "deliveredAt"  #: epoch; myKaarma's 2xx
    REPLAYED_AT = "replayedAt"  #: epoch; last operator replay
    REPLAYS = "replays"  #: number of replays
    # -- dedupe (ENRICH_COMMIT) -------------------------------------------------------
    TXN_KEY = "txnKey"  #: the dedupe-claim key this lead owns (internal)
    DUPLICATE_OF = "duplicateOf"  #: the lead id that owns the transaction
    # -- retention and forget (store/erasure.py) --------------------------------------
    EMAIL_KEY = "emailKey"  #: the email-index key listing this lead (internal; no address)
    # -- delivery guard and retries (dealer GUARD, SCHEDULE_RETRY, SWEEP) ---------------
    #: the token of the delivery holding the lead (internal; a field name, not a secret)
    DELIVERY_TOKEN = "deliveryToken"  # noqa: S105
    LEASE_UNTIL = "leaseUntil"  #: epoch; when that delivery's lease runs out
    NEXT_ATTEMPT_AT = "nextAttemptAt"  #: epoch; when a scheduled retry is due
    ATTEMPT_COUNT = "attemptCount"  #: delivery attempts since the last replay
    # -- dealer health (store/dealer_scripts.py) -------------------------------------
    HELD_REASON = "heldReason"  #: a `pipeline.breaker.BreakerReason` value, while held
    HELD_AT = "heldAt"  #: epoch; when the lead was last held
    PACE_SLOT = "paceSlot"  #: epoch; the delivery slot the dealer's rate reserved
    # -- written by the stages (pipeline/stages.py) ----------------------------------
    RECEIVED_AT = "receivedAt"  #: ISO 8601; the sender's received_at or arrival time
    PAYLOAD = "payload"  #: JSON; the payload as received (or a description of it)
    PARTNER = "partner"  #: the partner, from the task argument or the payload
    PARTNER_HINT = "partnerHint"  #: the `partner=` task argument (internal)
    TRANSACTION_ID = "transactionId"  #: the sender's transactionId
    WARNINGS = "warnings"  #: JSON list of warnings
    ERROR = "error"  #: JSON; why the lead is dead
    NORMALIZED = "normalized"  #: JSON; the normalized payload
    VEHICLE_ID_METHOD = "vehicleIdMethod"  #: a `pipeline.lead.VehicleIdMethod` value
    DEALER_UUID = "dealerUuid"  #: the routed dealer
    ROUTE_SECTION = "routeSection"  #: the routing-file section that matched
    REQUEST = "request"  #: JSON; the myKaarma request body
    PROSPECT_UUID = "prospectUuid"  #: myKaarma's prospect uuid, when it sent one
    IS_NEW_CREATED = "isNewCreated"  #: `true`/`false`, when myKaarma said
    MYKAARMA_WARNINGS = "mykaarmaWarnings"  #: JSON; myKaarma's warnings on a 2xx
    #: "1" when the lead's partner has a webhook: its transitions to delivered, dead
    #: and duplicate then write an outcome notification (store/scripts.py `emit`)
    NOTIFY = "notify"


#: Fields that hold JSON text.
JSON_FIELDS: tuple[str, ...] = tuple(
    f.value
    for f in (RecordField.WARNINGS, RecordField.ERROR, RecordField.NORMALIZED, RecordField.REQUEST)
)
#: Fields that hold epoch seconds.
EPOCH_FIELDS: tuple[str, ...] = tuple(
    f.value
    for f in (
        RecordField.CREATED_AT,
        RecordField.UPDATED_AT,
        RecordField.FAILED_AT,
        RecordField.DELIVERED_AT,
        RecordField.REPLAYED_AT,
        RecordField.NEXT_ATTEMPT_AT,
        RecordField.LEASE_UNTIL,
        RecordField.HELD_AT,
        RecordField.PACE_SLOT,
    )
)
#: Internal bookkeeping, never shown to operators.
INTERNAL_FIELDS: tuple[str, ...] = tuple(
    f.value
    for f in (
        RecordField.DELIVERY_TOKEN,
        RecordField.TXN_KEY,
        RecordField.PARTNER_HINT,
        RecordField.EMAIL_KEY,
        RecordField.NOTIFY,
    )
)
