"""`leadpipe validate` and the lead file reader behind it."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from leadpipe.cli import main
from leadpipe.cli import validate as validate_module
from leadpipe.cli.input import InputError, read_lead_documents, read_lead_input
from leadpipe.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipeline.mapping import validate_mykaarma_request
from tests.unit.test_models_rules import valid_payload

ROUTING = """
[defaults]
dealer_uuid = "d-0001"
source = "MMC"
lead_type = "SERVICE_DEMAND"
services = [{ code = "VSC", name = "Vehicle service contract" }]

[partners.acme]
dealer_uuid = "d-0002"
"""
STATES_ONLY_ROUTING = """
[states.CA]
dealer_uuid = "d-0003"
"""


def invalid_payload() -> dict[str, Any]:
    return valid_payload(mileage=0)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, ["validate", *args], input=stdin, catch_exceptions=False)


class TestReadLeadDocuments:
    def test_single_object(self) -> None:
        lead_input = read_lead_input(io.StringIO('{"a": 1}'))
        assert lead_input.documents == [{"a": 1}]
        assert lead_input.single

    def test_array(self) -> None:
        lead_input = read_lead_input(io.BytesIO(b'[{"a": 1}, 2, {"b": 3}]'))
        assert lead_input.documents == [{"a": 1}, 2, {"b": 3}]
        assert not lead_input.single

    def test_json_lines_keep_bad_lines_in_place(self) -> None:
        text = '{"a": 1}\n\nnot json\n{"b": 2}\r\n[1]\n'
        documents = read_lead_documents(io.StringIO(text))
        assert documents == [
            {"a": 1},
            InputError(3, "not valid JSON: Expecting value (column 1)"),
            {"b": 2},
            [1],
        ]

    def test_a_broken_pretty_printed_document_is_one_error(self) -> None:
        documents = read_lead_documents(io.StringIO('{\n  "a": 1,\n  "b": \n}\n'))
        assert len(documents) == 1
        assert isinstance(documents[0], InputError) and documents[0].position == 4

    def test_error_messages_do_not_quote_the_input(self) -> None:
        documents = read_lead_documents(io.StringIO('{"a": 1}\nsecret@example.com\n'))
        assert "secret" not in str(documents[1])

    @pytest.mark.parametrize("text", ["", "   \n\n"])
    def test_empty_input_has_no_documents(self, text: str) -> None:
        assert read_lead_documents(io.StringIO(text)) == []

    def test_path_with_bom_and_bad_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "leads.json"
        path.write_bytes(b'\xef\xbb\xbf{"name": "J\xffane"}')
        assert read_lead_documents(path) == [{"name": "J\ufffdane"}]
        assert read_lead_documents(str(path)) == [{"name": "J\ufffdane"}]

    def test_deep_nesting_and_huge_numbers_are_errors(self) -> None:
        documents = read_lead_documents(io.StringIO("[" * 100_000 + "\n" + "1" * 5000 + "\n"))
        assert all(isinstance(document, InputError) for document in documents)

    def test_missing_file_raises_oserror(self, tmp_path: Path) -> None:
        with pytest.raises(OSError):
            read_lead_documents(tmp_path / "nope.json")


class TestValidateCommand:
    def test_valid_single_object_prints_one_json_object(self, tmp_path: Path) -> None:
        path = write(tmp_path, "lead.json", json.dumps(valid_payload(color="red")))
        result = run(str(path), "--json")
        assert result.exit_code == EXIT_OK
        report = json.loads(result.output)
        assert report["valid"] is True
        assert report["vehicleIdMethod"] == "vin"
        assert report["errors"] == []
        assert report["warnings"] == ["ignored unknown key vehicle.color"]
        assert report["normalized"]["vehicle"]["vin"] == "1HGCM82633A004352"
        assert "dealerUuid" not in report

    def test_array_keeps_input_order_and_exits_1_when_any_is_invalid(self, tmp_path: Path) -> None:
        path = write(tmp_path, "leads.json", json.dumps([valid_payload(), invalid_payload(), []]))
        result = run(str(path), "--json")
        assert result.exit_code == EXIT_FAILED
        reports = json.loads(result.output)
        assert [report["valid"] for report in reports] == [True, False, False]
        assert reports[1]["errors"] == [
            {
                "field": "vehicle.mileage",
                "message": "must be a whole number between 1 and 250,000 (got 0)",
            }
        ]
        assert reports[2]["errors"][0]["field"] == "payload"

    def test_an_array_of_one_is_still_an_array(self, tmp_path: Path) -> None:
        path = write(tmp_path, "leads.json", json.dumps([valid_payload()]))
        assert isinstance(json.loads(run(str(path), "--json").output), list)

    def test_json_lines_from_stdin_with_a_bad_line(self) -> None:
        stdin = f"{json.dumps(valid_payload())}\n{{oops\n{json.dumps(valid_payload())}\n"
        result = run("-", "--json", stdin=stdin)
        assert result.exit_code == EXIT_FAILED
        reports = json.loads(result.output)
        assert [report["valid"] for report in reports] == [True, False, True]
        assert reports[1]["errors"][0]["field"] == "payload"
        assert reports[1]["errors"][0]["message"].startswith("line 2: not valid JSON")

    def test_plain_output_when_piped(self, tmp_path: Path) -> None:
        path = write(tmp_path, "leads.json", json.dumps([valid_payload(), invalid_payload()]))
        result = run(str(path))
        assert result.exit_code == EXIT_FAILED
        lines = result.output.splitlines()
        assert len(lines) == 3
        assert lines[0].split() == ["1", "valid", "vin"]
        assert lines[1].split()[:3] == ["2", "INVALID", "-"]
        assert "vehicle.mileage: must be a whole number" in lines[1]
        assert lines[2] == "2 leads: 1 valid, 1 invalid"
        assert "\x1b[" not in result.output

    def test_table_on_a_terminal(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        terminal = functools.partial(Console, force_terminal=True, width=160)
        monkeypatch.setattr(validate_module, "Console", terminal)
        path = write(tmp_path, "leads.json", json.dumps([valid_payload(), invalid_payload()]))
        result = run(str(path))
        assert result.exit_code == EXIT_FAILED
        assert "\x1b[" in result.output  # styled
        assert "┃" in result.output or "│" in result.output  # a table
        assert "INVALID" in result.output and "vehicle.mileage" in result.output

    def test_empty_file_is_nothing_to_do(self, tmp_path: Path) -> None:
        path = write(tmp_path, "empty.json", "\n")
        result = run(str(path))
        assert result.exit_code == EXIT_OK
        assert "Nothing to do" in result.output
        assert json.loads(run(str(path), "--json").output) == []

    def test_missing_file_is_bad_usage(self, tmp_path: Path) -> None:
        result = run(str(tmp_path / "nope.json"))
        assert result.exit_code == EXIT_USAGE

    def test_missing_argument_is_bad_usage(self) -> None:
        assert run().exit_code == EXIT_USAGE


class TestValidateWithRouting:
    def test_routed_lead_shows_dealer_and_mykaarma_request(self, tmp_path: Path) -> None:
        leads = write(tmp_path, "leads.json", json.dumps([valid_payload(), invalid_payload()]))
        routing = write(tmp_path, "routing.toml", ROUTING)
        result = run(str(leads), "--routing", str(routing), "--json")
        assert result.exit_code == EXIT_FAILED
        routed, invalid = json.loads(result.output)
        assert routed["dealerUuid"] == "d-0002"  # partners.acme
        body = routed["mykaarmaRequest"]
        assert body["leadId"] == "validate-1"
        assert body["customer"]["firstName"] == "Jane"
        assert body["vehicle"]["vin"] == "1HGCM82633A004352"
        assert body["vehicle"]["estimatedMileage"] == "45000"
        assert body["campaign"] == {"name": "lead-gen", "code": "lead-gen"}
        validate_mykaarma_request(body)
        assert invalid["dealerUuid"] is None and invalid["mykaarmaRequest"] is None

    def test_unroutable_lead_is_a_warning_not_an_error(self, tmp_path: Path) -> None:
        leads = write(tmp_path, "lead.json", json.dumps(valid_payload()))
        routing = write(tmp_path, "routing.toml", STATES_ONLY_ROUTING)
        result = run(str(leads), "--routing", str(routing), "--json")
        assert result.exit_code == EXIT_OK
        report = json.loads(result.output)
        assert report["valid"] is True
        assert report["dealerUuid"] is None and report["mykaarmaRequest"] is None
        assert report["warnings"] == ["unroutable"]

    def test_dealer_column_in_plain_output(self, tmp_path: Path) -> None:
        leads = write(tmp_path, "lead.json", json.dumps(valid_payload()))
        routing = write(tmp_path, "routing.toml", ROUTING)
        result = run(str(leads), "--routing", str(routing))
        assert result.output.splitlines()[0].split() == ["1", "valid", "vin", "d-0002"]

    def test_broken_routing_file_is_bad_usage(self, tmp_path: Path) -> None:
        leads = write(tmp_path, "lead.json", json.dumps(valid_payload()))
        routing = write(tmp_path, "routing.toml", "[defaults\n")
        result = run(str(leads), "--routing", str(routing))
        assert result.exit_code == EXIT_USAGE
        assert "--routing" in result.output


def test_real_console_script(tmp_path: Path) -> None:
    # Given the installed console script and a JSON Lines file
    script = Path(sys.executable).with_name("leadpipe")
    assert script.exists(), "install with pip install -e '.[dev]'"
    leads = write(
        tmp_path, "leads.jsonl", f"{json.dumps(valid_payload())}\n{json.dumps(invalid_payload())}\n"
    )
    # When it validates the file as a separate process
    completed = subprocess.run(
        [str(script), "validate", str(leads), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Then it reports both leads and exits 1
    assert completed.returncode == EXIT_FAILED, completed.stderr
    assert [report["valid"] for report in json.loads(completed.stdout)] == [True, False]
