"""The parts of `worker`, `flower`, `metrics` and `demo` that need no Redis: refusals
at start, the latency histogram, the demo's sample leads."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from config.settings import DEFAULT_HOME, SettingsError, load_settings
from leadpipe.cli import main
from leadpipe.cli.worker import _exit_code, _only
from leadpipe.demo_samples import WEBHOOK_SECRET_ENV, Tracked, explain, routing, samples
from leadpipe.exit_codes import EXIT_USAGE
from leadpipe.metrics import latency_histogram
from leadpipe.runner import default_specs
from pipeline.routing import RoutingTable, load_routing
from pipeline.validation import validate_lead
from store.records import LATENCY_BUCKETS, latency_bucket
from tasks.depths import queue_keys

#: Variables a developer's shell may hold that would change what these commands do.
UNSET: dict[str, str | None] = {
    "LEADPIPE_FLOWER_BASIC_AUTH": None,
    "FLOWER_BASIC_AUTH": None,
    "LEADPIPE_REDIS_URL": "redis://127.0.0.1:1/0",  # never reached by these tests
    "LEADPIPE_BROKER_URL": None,
}


def invoke(*args: str, **env: str | None) -> Any:
    return CliRunner().invoke(main, list(args), env={**UNSET, **env})


# -- flower -----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "flower.internal"])
def test_flower_refuses_a_non_loopback_address_without_basic_auth(address: str) -> None:
    result = invoke("flower", "--address", address)
    assert result.exit_code == EXIT_USAGE
    assert "LEADPIPE_FLOWER_BASIC_AUTH" in result.output


def test_flower_refuses_credentials_flower_cannot_take() -> None:
    result = invoke("flower", LEADPIPE_FLOWER_BASIC_AUTH="ops:pa,ss")
    assert result.exit_code == EXIT_USAGE
    assert "','" in result.output


def test_flower_names_a_bad_basic_auth_variable() -> None:
    result = invoke("flower", LEADPIPE_FLOWER_BASIC_AUTH="no-colon")
    assert result.exit_code == EXIT_USAGE
    assert "LEADPIPE_FLOWER_BASIC_AUTH" in result.output


# -- worker -----------------------------------------------------------------------


def test_worker_stops_at_start_on_a_bad_setting_naming_the_variable() -> None:
    result = invoke("worker", LEADPIPE_RETRY_BASE_SECONDS="soon")
    assert result.exit_code == EXIT_USAGE
    assert "LEADPIPE_RETRY_BASE_SECONDS" in result.output


def test_worker_refuses_an_unknown_queue() -> None:
    result = invoke("worker", "--queues", "leads.ingest,leads.typo")
    assert result.exit_code == EXIT_USAGE
    assert "leads.typo" in result.output


def test_a_queue_subset_keeps_each_queue_on_its_own_pool() -> None:
    specs = _only(default_specs(16), "leads.deliver, leads.ingest")
    assert [(s.name, list(s.queues), s.concurrency) for s in specs] == [
        ("cpu", ["leads.ingest"], specs[0].concurrency),
        ("io", ["leads.deliver"], 16),
    ]
    assert [s.name for s in _only(default_specs(16), "celery")] == ["cpu"]


@pytest.mark.parametrize(("returncode", "exit_code"), [(0, 0), (2, 2), (-15, 143), (-9, 137)])
def test_a_childs_return_code_becomes_a_shell_exit_code(returncode: int, exit_code: int) -> None:
    assert _exit_code(returncode) == exit_code


# -- metrics ----------------------------------------------------------------------


def test_latency_histogram_is_cumulative_with_the_inf_bucket_last() -> None:
    fields = {
        latency_bucket(0.003): "2",  # le:0.01
        latency_bucket(0.2): "3",  # le:0.25
        latency_bucket(1000): "1",  # le:+Inf
        "sum": "42.5",
    }
    buckets, total = latency_histogram(fields)
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    as_dict = dict(buckets)
    assert as_dict["0.01"] == 2
    assert as_dict["0.1"] == 2
    assert as_dict["0.25"] == 5
    assert as_dict["300.0"] == 5
    assert buckets[-1] == ("+Inf", 6)
    assert total == 42.5


def test_an_empty_latency_hash_is_an_empty_histogram() -> None:
    buckets, total = latency_histogram({})
    assert {count for _, count in buckets} == {0}
    assert total == 0.0


def test_queue_keys_cover_kombus_priority_lists() -> None:
    assert queue_keys("leads.ingest") == [
        "leads.ingest",
        "leads.ingest\x06\x163",
        "leads.ingest\x06\x166",
        "leads.ingest\x06\x169",
    ]


# -- demo -------------------------------------------------------------------------


def _routing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> RoutingTable:
    path = tmp_path / "routing.toml"
    path.write_text(routing("http://127.0.0.1:9/hooks"))
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, "whsec_" + base64.b64encode(b"d" * 32).decode())
    return load_routing(path)


def test_each_demo_sample_is_what_it_claims_to_be(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = _routing(tmp_path, monkeypatch)
    assert routes.webhook_for("acme") is not None  # the demo shows acme's webhook
    by_key = {s.key: s for s in samples("run1")}
    for sample in by_key.values():
        result = validate_lead(sample.payload, partner=sample.partner)
        assert result.valid is (sample.expect_reason != "invalid"), sample.key
        if result.lead is not None:
            route = routes.route(result.lead.partner, result.lead.state)
            assert (route is None) is (sample.expect_reason == "unroutable"), sample.key
    methods = {
        key: validate_lead(by_key[key].payload).method
        for key in ("vin", "make_model_year", "plate_state")
    }
    assert {k: str(v) for k, v in methods.items()} == {
        "vin": "vin",
        "make_model_year": "make_model_year",
        "plate_state": "plate_state",
    }
    assert len(validate_lead(by_key["invalid"].payload).errors) >= 3  # several rules broken
    assert by_key["duplicate"].payload["transactionId"] == by_key["vin"].payload["transactionId"]


def test_demo_transaction_ids_are_new_on_every_run() -> None:
    first = {s.payload["transactionId"] for s in samples("run1")}
    second = {s.payload["transactionId"] for s in samples("run2")}
    assert not first & second


def test_a_lead_is_ok_only_in_its_expected_state_and_reason() -> None:
    rejected = next(s for s in samples("r") if s.key == "rejected")
    tracked = Tracked(1, rejected, "id-1", "dead", {"state": "dead", "reason": "rejected"})
    assert tracked.ok
    tracked.record = {"state": "dead", "reason": "exhausted"}
    assert not tracked.ok
    tracked.state = "delivered"
    assert not tracked.ok


def test_explain_says_why_without_customer_data() -> None:
    record = {
        "state": "dead",
        "reason": "invalid",
        "error": {"errors": [{"field": "lead.email", "message": "bad: x@y"}]},
        "payload": {"lead": {"email": "x@y"}},
    }
    assert explain(record) == "1 rule broken: lead.email"
    rejected = {
        "state": "dead",
        "reason": "rejected",
        "error": {"status": 400, "mykaarma": {"code": "INVALID_REQUEST"}},
    }
    assert explain(rejected) == "myKaarma answered HTTP 400 INVALID_REQUEST"


# -- settings (a regression found while building the demo) --------------------------


def test_only_the_contract_names_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # $HOME must not become LEADPIPE_HOME (the embedded Redis wrote its files into the
    # user's home directory), nor a stray REDIS_URL the pipeline's Redis
    for name in ("LEADPIPE_HOME", "LEADPIPE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("ROUTING_FILE", "/etc/other.toml")
    settings = load_settings()
    assert settings.home == Path("/home/someone") / DEFAULT_HOME.name
    assert settings.redis_url is None
    assert settings.routing_file is None
    monkeypatch.setenv("LEADPIPE_HOME", "/srv/leadpipe")
    assert str(load_settings().home) == "/srv/leadpipe"


def test_leadpipe_home_is_one_absolute_place_whatever_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `leadpipe submit` from another directory must find the same embedded Redis
    monkeypatch.delenv("LEADPIPE_HOME", raising=False)
    homes = set()
    for where in (tmp_path, tmp_path / "elsewhere"):
        where.mkdir(exist_ok=True)
        monkeypatch.chdir(where)
        homes.add(load_settings().home)
    assert len(homes) == 1 and next(iter(homes)).is_absolute()


def test_a_lease_shorter_than_two_http_timeouts_is_refused_at_start() -> None:
    with pytest.raises(SettingsError, match=r"LEADPIPE_LEASE_SECONDS .* LEADPIPE_HTTP_TIMEOUT"):
        load_settings(LEADPIPE_LEASE_SECONDS=15, LEADPIPE_HTTP_TIMEOUT_SECONDS=10)
    assert load_settings(LEADPIPE_LEASE_SECONDS=21, LEADPIPE_HTTP_TIMEOUT_SECONDS=10)


def test_retention_days_accept_fractions_and_refuse_zero() -> None:
    settings = load_settings(LEADPIPE_RETENTION_DAYS="0.0001", LEADPIPE_DEAD_RETENTION_DAYS="2.5")
    assert settings.retention_seconds == pytest.approx(8.64)
    assert settings.dead_retention_seconds == pytest.approx(216_000)
    with pytest.raises(SettingsError, match="LEADPIPE_RETENTION_DAYS"):
        load_settings(LEADPIPE_RETENTION_DAYS="0")
