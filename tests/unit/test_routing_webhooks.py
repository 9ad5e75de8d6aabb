"""A partner's `webhook = { url, secret_env }` in the routing file (CONTRACT section 9):
read with the file, refused whole naming the key, the last good file kept on reload."""

from __future__ import annotations

import base64
import os
import textwrap
from pathlib import Path

import pytest

from pipeline.errors import RoutingFileError
from pipeline.routing import RoutingFile, parse_routing

SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()
ENV = {"ACME_WEBHOOK_SECRET": SECRET}


def routing(webhook: str, *, partner: str = "acme") -> str:
    return textwrap.dedent(
        f"""
        [defaults]
        dealer_uuid = "d-1"

        [partners.{partner}]
        webhook = {webhook}
        """
    )


def test_a_partner_webhook_is_read_with_its_secret_from_the_environment() -> None:
    table = parse_routing(
        routing('{ url = "https://hooks.acme.example/leads", secret_env = "ACME_WEBHOOK_SECRET" }'),
        environ=ENV,
    )
    target = table.webhook_for("acme")
    assert target is not None
    assert target.url == "https://hooks.acme.example/leads"
    assert target.secret.get_secret_value() == SECRET
    assert table.webhook_for("globex") is None
    assert table.webhook_for(None) is None
    # the webhook never leaks into the route: the partner section still routes to d-1
    route = table.route("acme", "CA")
    assert route is not None and route.dealer_uuid == "d-1"
    assert SECRET not in repr(table)


@pytest.mark.parametrize(
    ("webhook", "environ", "words"),
    [
        ('{ url = "ftp://x.example/", secret_env = "ACME_WEBHOOK_SECRET" }', ENV,
         "partners.acme.webhook.url: must be an https:// URL"),
        ('{ url = "http://hooks.acme.example/", secret_env = "ACME_WEBHOOK_SECRET" }', ENV,
         "partners.acme.webhook.url: http:// is allowed only to a loopback address"),
        ('{ url = "https://hooks.acme.example/", secret_env = "MISSING_SECRET" }', ENV,
         "partners.acme.webhook.secret_env: environment variable MISSING_SECRET is not set"),
        ('{ url = "https://hooks.acme.example/", secret_env = "ACME_WEBHOOK_SECRET" }',
         {"ACME_WEBHOOK_SECRET": "plain-password"},
         "partners.acme.webhook.secret_env: ACME_WEBHOOK_SECRET must hold a Standard Webhooks"),
        ('{ url = "https://hooks.acme.example/" }', ENV,
         "partners.acme.webhook: missing secret_env"),
        ('{ url = "https://h.example/", secret_env = "ACME_WEBHOOK_SECRET", retries = 3 }', ENV,
         "partners.acme.webhook.retries: unknown key"),
    ],
)  # fmt: skip
def test_an_unusable_webhook_refuses_the_file_naming_the_key(
    webhook: str, environ: dict[str, str], words: str
) -> None:
    with pytest.raises(RoutingFileError) as caught:
        parse_routing(routing(webhook), origin="routes.toml", environ=environ)
    message = str(caught.value)
    assert "routes.toml" in message
    assert words in message
    assert "plain-password" not in message


def test_a_webhook_is_a_partner_key_only() -> None:
    text = (
        '[defaults]\ndealer_uuid = "d-1"\n'
        'webhook = { url = "https://h.example/", secret_env = "S" }'
    )
    with pytest.raises(RoutingFileError, match=r"defaults\.webhook: unknown key"):
        parse_routing(text, environ={"S": SECRET})


def test_a_broken_webhook_on_reload_keeps_the_last_good_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a routing file with a good webhook, loaded
    monkeypatch.setenv("ACME_WEBHOOK_SECRET", SECRET)
    path = tmp_path / "routes.toml"
    path.write_text(
        routing('{ url = "https://hooks.acme.example/", secret_env = "ACME_WEBHOOK_SECRET" }')
    )
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    source = RoutingFile(path, check_interval=0)
    assert source.current().webhook_for("acme") is not None
    # When: an edit points the webhook at plain http on another host
    path.write_text(
        routing('{ url = "http://hooks.acme.example/x", secret_env = "ACME_WEBHOOK_SECRET" }')
    )
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    # Then: the last good version stays in force
    target = source.current().webhook_for("acme")
    assert target is not None and target.url == "https://hooks.acme.example/"
