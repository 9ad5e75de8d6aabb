"""The record's field names live once (`pipeline/record_fields.py`): the Lua scripts
name no field of their own, and both stores implement the stages' protocol."""

from __future__ import annotations

import re

import pytest

from pipeline.record_fields import RecordField
from pipeline.store_protocol import StageStore
from store import dealer_scripts, scripts
from tests.unit.memory_store import MemoryStore

SCRIPTS = {
    f"{module.__name__}.{name}": value
    for module in (scripts, dealer_scripts)
    for name, value in vars(module).items()
    if name.isupper()
    and not name.startswith("_")
    and name not in ("FIELDS", "NOTIFICATION_FIELDS", "BREAKER_TABLE", "PRELUDE")
    and isinstance(value, str)
}
KNOWN = {field.value for field in RecordField}


def test_there_are_scripts_to_check() -> None:
    assert {"CREATE", "DEAD", "SWEEP", "PURGE"} <= {n.rsplit(".", 1)[1] for n in SCRIPTS}
    assert {"store.dealer_scripts.GUARD", "store.dealer_scripts.RELEASE"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_knows_the_fields_and_names_only_known_ones(name: str) -> None:
    source = SCRIPTS[name]
    assert source.startswith(scripts.FIELDS)
    used = set(re.findall(r"\bF\.([A-Za-z]+)", source))
    assert used, f"{name} names no record field"
    assert used <= KNOWN, f"{name} names unknown fields {sorted(used - KNOWN)}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_no_script_spells_a_field_name_as_a_literal(name: str) -> None:
    # The notification's and the dealer hash's own field tables may share names with
    # the record's.
    body = (
        SCRIPTS[name][len(scripts.FIELDS) :]
        .replace(scripts.NOTIFICATION_FIELDS, "")
        .replace(dealer_scripts.BREAKER_TABLE, "")
    )
    literals = set(re.findall(r"'([A-Za-z]+)'", body))
    assert not literals & KNOWN, f"{name} spells {sorted(literals & KNOWN)}; use F.<name>"


def test_the_lua_table_lists_every_field_once() -> None:
    names = re.findall(r"(\w+) = '(\w+)'", scripts.FIELDS)
    assert [a for a, _ in names] == [b for _, b in names] == [f.value for f in RecordField]


def test_the_memory_store_is_a_stage_store() -> None:
    store: StageStore = MemoryStore()  # mypy checks the protocol; this checks it runs
    assert store.create("a", {RecordField.PAYLOAD: "{}"}, now=1.0) is None
    assert store.load("a", RecordField.STATE, "nothing") == ["received", None]
