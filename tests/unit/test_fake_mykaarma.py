"""The fake myKaarma, over real HTTP on 127.0.0.1 (and its CLI in a real subprocess).

Throughput is measured, not asserted: ``.venv/bin/python -m tests.unit.test_fake_mykaarma``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from leadpipe.fake_mykaarma import Behaviour, BehaviourError, FakeMyKaarma, parse_behaviour

USER, PASSWORD = "svc-user", "s3cret"
TIMEOUT = 5  # seconds, for every request: no test can hang on the fake


def lead_body(lead_id: str = "lead-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "emails": [{"emailAddress": "ada@example.com"}],
        },
        "vehicle": {"vin": "1HGCM82633A004352", "estimatedMileage": "42000"},
        "dealerDetails": {"source": "MMC"},
        "services": [{"code": "VSC", "name": "Vehicle service contract"}],
        "status": "NEW",
        "leadType": "SERVICE_DEMAND",
        "leadId": lead_id,
    }
    body.update(overrides)
    return body


def post(
    fake: FakeMyKaarma,
    dealer: str = "d-0001",
    body: Any = None,
    *,
    auth: tuple[str, str] | None = (USER, PASSWORD),
    session: requests.Session | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    send = requests.post if session is None else session.post
    return send(
        f"{fake.url}/leads/v2/dealer/{dealer}",
        json=lead_body() if body is None else body,
        auth=auth,
        headers=headers,
        timeout=TIMEOUT,
    )


@pytest.fixture
def fake() -> Iterator[FakeMyKaarma]:
    with FakeMyKaarma(username=USER, password=PASSWORD, seed=1) as server:
        yield server


def make_fake(**kwargs: Any) -> FakeMyKaarma:
    return FakeMyKaarma(username=USER, password=PASSWORD, **kwargs)


# -- the lead endpoint -----------------------------------------------------------------


def test_success_answers_the_mykaarma_envelope_and_records_the_request(fake):
    response = post(fake, "d-0001", lead_body("lead-ok"))

    assert response.status_code == 200
    body = response.json()
    assert body["statusCode"] == 200
    assert body["error"] is None
    assert body["warnings"] == []
    assert body["isNewCreated"] is True
    assert len(body["prospectUuid"]) == 36
    [record] = fake.requests
    assert record["dealerUuid"] == "d-0001"
    assert record["leadId"] == "lead-ok"
    assert record["authOk"] is True
    assert record["status"] == 200
    assert record["stored"] is True
    assert fake.stored_lead_ids() == {"lead-ok": 1}


@pytest.mark.parametrize(
    "auth", [None, (USER, "wrong"), ("someone-else", PASSWORD)], ids=["none", "password", "user"]
)
def test_bad_or_missing_basic_auth_answers_401(fake, auth):
    response = post(fake, auth=auth)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert fake.requests[0]["authOk"] is False
    assert fake.stored_lead_ids() == {}


def test_no_credentials_configured_means_no_auth_check():
    with FakeMyKaarma() as fake:
        assert post(fake, auth=None).status_code == 200


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("not json", "not JSON"),
        ([1, 2], "not a JSON object"),
        ({k: v for k, v in lead_body().items() if k != "customer"}, "customer"),
        ({k: v for k, v in lead_body().items() if k != "vehicle"}, "vehicle"),
        ({k: v for k, v in lead_body().items() if k != "dealerDetails"}, "dealerDetails"),
        (lead_body(services=[]), "services"),
        (lead_body(status="OPEN"), "status"),
        ({k: v for k, v in lead_body().items() if k != "leadType"}, "leadType"),
    ],
    ids=["text", "array", "customer", "vehicle", "dealer", "services", "status", "leadType"],
)
def test_bad_body_answers_400_with_the_error_envelope(fake, body, complaint):
    if isinstance(body, str):
        response = requests.post(
            f"{fake.url}/leads/v2/dealer/d-0001", data=body, auth=(USER, PASSWORD), timeout=TIMEOUT
        )
    else:
        response = post(fake, body=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert complaint in error["description"]
    assert fake.requests[0]["stored"] is False


def test_unknown_path_answers_404(fake):
    response = requests.post(f"{fake.url}/leads/v1/whatever", json={}, timeout=TIMEOUT)

    assert response.status_code == 404
    assert fake.requests == []


# -- behaviours ------------------------------------------------------------------------


def test_reject_answers_400_invalid_request_and_stores_nothing():
    with make_fake(behaviours={"d-rej": "reject"}) as fake:
        response = post(fake, "d-rej")
        other = post(fake, "d-ok", lead_body("lead-2"))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert other.status_code == 200
    assert fake.stored_lead_ids() == {"lead-2": 1}


@pytest.mark.parametrize(("code", "name"), [(404, "NOT_FOUND"), (500, "INTERNAL_SERVER_ERROR")])
def test_status_behaviour_always_answers_that_status(code, name):
    with make_fake(behaviours={"d-x": f"status:{code}"}) as fake:
        answers = [post(fake, "d-x") for _ in range(3)]

    assert [a.status_code for a in answers] == [code] * 3
    assert answers[0].json()["error"]["code"] == name
    assert fake.stored_lead_ids() == {}


def test_status_behaviour_with_204_stores_the_lead_without_a_body():
    with make_fake(behaviours={"d-x": "status:204"}) as fake:
        response = post(fake, "d-x")

    assert response.status_code == 204
    assert response.content == b""
    assert fake.stored_lead_ids() == {"lead-1": 1}


def test_flaky_answers_503_n_times_per_lead_then_succeeds():
    with make_fake(behaviours={"d-flaky": "flaky:2"}) as fake:
        first_lead = [post(fake, "d-flaky", lead_body("a")).status_code for _ in range(3)]
        second_lead = [post(fake, "d-flaky", lead_body("b")).status_code for _ in range(3)]

    assert first_lead == [503, 503, 200]
    assert second_lead == [503, 503, 200]
    assert fake.stored_lead_ids() == {"a": 1, "b": 1}


@pytest.mark.parametrize(
    ("spec", "header"), [("retry-after:0.05", "0.05"), ("429:3", "3"), ("429:3600", "3600")]
)
def test_retry_after_answers_429_once_per_lead_with_the_header(spec, header):
    with make_fake(behaviours={"d-busy": spec}) as fake:
        first = post(fake, "d-busy")
        second = post(fake, "d-busy")

    assert first.status_code == 429
    assert first.headers["Retry-After"] == header
    assert second.status_code == 200
    assert fake.stored_lead_ids() == {"lead-1": 1}


def test_slow_sets_one_dealers_latency():
    with make_fake(behaviours={"d-slow": "slow:150"}) as fake:
        started = time.monotonic()
        response = post(fake, "d-slow")
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.15


def test_slow_combines_with_an_outcome():
    with make_fake(behaviours={"d": "slow:100,status:500"}) as fake:
        started = time.monotonic()
        response = post(fake, "d")
        elapsed = time.monotonic() - started

    assert response.status_code == 500
    assert elapsed >= 0.1


def test_wildcard_behaviour_applies_to_dealers_without_their_own():
    with make_fake(behaviours={"*": "reject", "d-good": "ok"}) as fake:
        assert post(fake, "d-any").status_code == 400
        assert post(fake, "d-good").status_code == 200


def test_idempotent_replay_returns_the_same_prospect_with_is_new_created_false(fake):
    first = post(fake, "d-0001", lead_body("lead-r")).json()
    again = post(fake, "d-0001", lead_body("lead-r")).json()
    other_dealer = post(fake, "d-0002", lead_body("lead-r")).json()

    assert first["isNewCreated"] is True
    assert again["isNewCreated"] is False
    assert again["prospectUuid"] == first["prospectUuid"]
    assert other_dealer["isNewCreated"] is True
    assert other_dealer["prospectUuid"] != first["prospectUuid"]
    assert [r["created"] for r in fake.requests] == [True, False, True]


def test_idempotency_key_header_identifies_the_lead(fake):
    key = {"Idempotency-Key": "idem-1"}
    first = post(fake, body=lead_body("x"), headers=key).json()
    again = post(fake, body=lead_body("y"), headers=key).json()

    assert again["prospectUuid"] == first["prospectUuid"]
    assert again["isNewCreated"] is False
    assert fake.requests[1]["idempotencyKey"] == "idem-1"


def test_drop_after_store_gives_the_client_a_connection_error_but_stores_the_lead():
    with make_fake(behaviours={"d-drop": "drop-after-store"}) as fake:
        # Given a dealer whose answer is lost after the lead was stored
        with pytest.raises(requests.ConnectionError):
            post(fake, "d-drop", lead_body("amb"))
        # When the client retries the same lead
        retry = post(fake, "d-drop", lead_body("amb"))

    # Then the fake recorded the store, and the retry is acknowledged, not created again
    first, second = fake.requests
    assert first["status"] == "dropped"
    assert first["stored"] is True
    assert first["created"] is True
    assert retry.status_code == 200
    assert retry.json()["isNewCreated"] is False
    assert second["created"] is False
    assert fake.stored_lead_ids() == {"amb": 2}


def test_down_closes_the_connection_and_stores_nothing():
    with make_fake(behaviours={"d-down": "down"}) as fake:
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                post(fake, "d-down")

    assert [r["status"] for r in fake.requests] == ["dropped", "dropped"]
    assert fake.stored_lead_ids() == {}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ok", Behaviour()),
        ("reject", Behaviour("reject")),
        ("status:404", Behaviour("status", 404)),
        ("flaky:3", Behaviour("flaky", 3)),
        ("retry-after:1.5", Behaviour("retry-after", 1.5)),
        ("429:2", Behaviour("retry-after", 2)),
        ("drop-after-store", Behaviour("drop-after-store")),
        ("down", Behaviour("down")),
        ("slow:250", Behaviour(latency_ms=250)),
        ("flaky:1, slow:20", Behaviour("flaky", 1, 20)),
    ],
)
def test_parse_behaviour(spec, expected):
    assert parse_behaviour(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "bogus",
        "status",
        "status:99",
        "status:600",
        "status:abc",
        "flaky:-1",
        "flaky:1.5",
        "retry-after:nan",
        "slow:-5",
        "ok:1",
        "reject,down",
    ],
)
def test_parse_behaviour_refuses_malformed_specs(spec):
    with pytest.raises(BehaviourError):
        parse_behaviour(spec)


# -- latency, failure rate, connections --------------------------------------------------


def test_slow_answers_are_served_concurrently_not_one_after_another():
    with make_fake(latency_ms=200) as fake:
        # Given 50 clients, each on its own connection
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(
                pool.map(lambda i: post(fake, body=lead_body(f"c{i}")).status_code, range(50))
            )
        elapsed = time.monotonic() - started

    # Then all of them were answered together, not one after another (which takes
    # 50 x 200 ms = 10 s); the bound leaves a loaded machine room
    assert statuses == [200] * 50
    assert 0.2 <= elapsed < 5.0


def test_fail_rate_is_random_but_repeatable_with_a_seed():
    def run() -> list[int]:
        with make_fake(fail_rate=0.5, seed=42) as fake:
            return [post(fake, body=lead_body(f"f{i}")).status_code for i in range(40)]

    first, second = run(), run()

    assert first == second
    assert set(first) == {200, 503}


def test_fail_rate_one_fails_every_request():
    with make_fake(fail_rate=1.0) as fake:
        statuses = {post(fake, body=lead_body(f"f{i}")).status_code for i in range(10)}

    assert statuses == {503}
    assert fake.stored_lead_ids() == {}


def test_keep_alive_reuses_one_connection(fake):
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=TIMEOUT)
    headers = {"Content-Type": "application/json"}
    sockets = []
    try:
        for i in range(5):
            connection.request("GET", "/_fake/health", headers=headers)
            response = connection.getresponse()
            assert response.status == 200, i
            response.read()
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert sockets[0] is not None
    assert all(s is sockets[0] for s in sockets)


def test_stop_closes_idle_keep_alive_connections_promptly():
    fake = make_fake().start()
    with requests.Session() as session:
        assert post(fake, session=session).status_code == 200
        started = time.monotonic()
        fake.stop()
        stopped_in = time.monotonic() - started

        with pytest.raises(requests.ConnectionError):
            post(fake, session=session)

    assert stopped_in < 2


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_refuses_to_bind_anything_but_loopback(host):
    with pytest.raises(ValueError, match="loopback"):
        FakeMyKaarma(host)


@pytest.mark.parametrize(
    "kwargs",
    [{"fail_rate": 1.5}, {"fail_rate": float("nan")}, {"latency_ms": -1}, {"username": "u"}],
)
def test_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        FakeMyKaarma(**kwargs)


def test_access_log_never_contains_the_body(caplog):
    with caplog.at_level(logging.DEBUG), FakeMyKaarma(access_log=True) as fake:
        post(fake, "d-log", lead_body("lead-log"), auth=None)

    assert "/leads/v2/dealer/d-log" in caplog.text
    assert "ada@example.com" not in caplog.text
    assert "Lovelace" not in caplog.text


# -- control endpoints -------------------------------------------------------------------


def test_control_endpoints_report_steer_and_reset(fake):
    base = f"{fake.url}/_fake"
    assert requests.get(f"{base}/health", timeout=TIMEOUT).json()["status"] == "ok"

    # Given a configuration changed at run time
    config = requests.post(
        f"{base}/config",
        json={"behaviours": {"d-bad": "status:500"}, "latency_ms": 1, "fail_rate": 0},
        timeout=TIMEOUT,
    )
    assert config.status_code == 200
    assert config.json()["behaviours"] == {"d-bad": "status:500"}
    # When leads are posted
    post(fake, "d-bad", lead_body("x"))
    post(fake, "d-good", lead_body("y"))

    # Then the requests and stats show them
    seen = requests.get(f"{base}/requests", timeout=TIMEOUT).json()
    assert [(r["dealerUuid"], r["status"]) for r in seen] == [("d-bad", 500), ("d-good", 200)]
    stats = requests.get(f"{base}/stats", timeout=TIMEOUT).json()
    assert stats == {"requests": 2, "by_status": {"500": 1, "200": 1}, "stored": {"y": 1}}
    # And a reset forgets them, but keeps the configuration
    assert requests.post(f"{base}/reset", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{base}/stats", timeout=TIMEOUT).json()["requests"] == 0
    assert post(fake, "d-bad").status_code == 500


@pytest.mark.parametrize(
    "settings",
    [{"fail_rate": 3}, {"latency_ms": -1}, {"behaviours": {"d": "nonsense"}}, {"color": "red"}, []],
)
def test_config_endpoint_refuses_bad_settings(fake, settings):
    response = requests.post(f"{fake.url}/_fake/config", json=settings, timeout=TIMEOUT)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert fake.configure()["fail_rate"] == 0.0


# -- CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--fail-rate", "1.5"],
        ["--fail-rate", "nan"],
        ["--latency-ms", "-5"],
        ["--behaviour", "d-1=sometimes"],
        ["--behaviour", "no-equals-sign"],
        ["--host", "0.0.0.0"],
        ["--username", "only-user"],
    ],
)
def test_cli_refuses_bad_values_with_a_usage_error(args):
    from leadpipe.cli.fake_mykaarma import fake_mykaarma

    result = CliRunner().invoke(
        fake_mykaarma, args, env={"MYKAARMA_USERNAME": None, "MYKAARMA_PASSWORD": None}
    )

    assert result.exit_code == 2, result.output


def test_cli_on_a_port_in_use_exits_1_naming_the_address():
    from leadpipe.cli.fake_mykaarma import fake_mykaarma

    # Given a port another listener holds
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When the fake is asked to serve there
        result = CliRunner().invoke(
            fake_mykaarma,
            ["--port", str(port)],
            env={"MYKAARMA_USERNAME": None, "MYKAARMA_PASSWORD": None},
        )
    # Then it fails (1, not a usage error) and says where it could not serve
    assert result.exit_code == 1, result.output
    assert f"cannot serve on 127.0.0.1:{port}" in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_cli_serves_until_sigterm_then_exits_zero():
    port = free_port()
    executable = Path(sys.executable).parent / "leadpipe"
    env = {**os.environ, "MYKAARMA_USERNAME": USER, "MYKAARMA_PASSWORD": PASSWORD}
    process = subprocess.Popen(
        [str(executable), "fake-mykaarma", "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Given the command is serving
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if requests.get(f"{url}/_fake/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "fake-mykaarma did not come up"
            time.sleep(0.05)
        assert (
            requests.post(
                f"{url}/leads/v2/dealer/d-0001", json=lead_body(), auth=(USER, "x"), timeout=TIMEOUT
            ).status_code
            == 401
        )
        # When it is sent SIGTERM
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    # Then it exits cleanly, having printed its URL as one JSON line
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[0]) == {"url": url}


# -- throughput (measured, not asserted) -------------------------------------------------


def measure_throughput(threads: int = 4, seconds: float = 3.0) -> float:
    """Requests per second from `threads` pooled Sessions against latency 0."""
    done = [0] * threads
    with FakeMyKaarma(username=USER, password=PASSWORD) as fake:
        stop_at = time.monotonic() + seconds

        def client(index: int) -> None:
            with requests.Session() as session:
                session.auth = (USER, PASSWORD)
                while time.monotonic() < stop_at:
                    post(fake, body=lead_body(f"t{index}-{done[index]}"), session=session)
                    done[index] += 1

        workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert fake.stats()["requests"] == sum(done)
    return sum(done) / seconds


if __name__ == "__main__":
    print(f"{measure_throughput():.0f} requests/s (4 pooled Sessions, latency 0)")
