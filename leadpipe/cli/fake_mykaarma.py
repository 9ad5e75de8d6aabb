"""`leadpipe fake-mykaarma`: serve the local myKaarma stand-in until SIGINT or SIGTERM."""

from __future__ import annotations

import logging

import click

from leadpipe.cli.gate import gated
from leadpipe.cli.options import bind_options, json_option
from leadpipe.cli.serving import serve_until_signal
from leadpipe.fake_mykaarma import DEFAULT_PORT, BehaviourError, FakeMyKaarma, parse_behaviour


def _behaviours(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    behaviours: dict[str, str] = {}
    for value in values:
        dealer, sep, spec = value.partition("=")
        if not sep or not dealer.strip():
            raise click.BadParameter(f"{value!r} is not DEALER=SPEC", ctx=ctx, param=param)
        try:
            parse_behaviour(spec)
        except BehaviourError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        behaviours[dealer.strip()] = spec
    return behaviours


@click.command("fake-mykaarma")
@bind_options(DEFAULT_PORT, any_port=True)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Delay before every answer, in milliseconds.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of requests that answer 503 at random.",
)
@click.option(
    "--behaviour",
    "behaviours",
    multiple=True,
    metavar="DEALER=SPEC",
    callback=_behaviours,
    help="A dealer's behaviour (repeatable; DEALER '*' for all): ok, reject, status:<code>, "
    "flaky:<n>, retry-after:<s>, 429:<s>, drop-after-store, down, slow:<ms>.",
)
@click.option(
    "--username", envvar="MYKAARMA_USERNAME", show_envvar=True, help="Basic auth user to require."
)
@click.option(
    "--password",
    envvar="MYKAARMA_PASSWORD",
    show_envvar=True,
    help="Basic auth password to require (prefer the variable: arguments show in `ps`).",
)
@click.option("--seed", type=int, default=None, help="Seed for --fail-rate and prospect ids.")
@click.option("--allow-remote", is_flag=True, help="Allow binding a non-loopback address.")
@click.option("--access-log", is_flag=True, help="Log each request line (never bodies).")
@json_option
@gated
def fake_mykaarma(
    address: str,
    port: int,
    latency_ms: float,
    fail_rate: float,
    behaviours: dict[str, str],
    username: str | None,
    password: str | None,
    seed: int | None,
    allow_remote: bool,
    access_log: bool,
    as_json: bool,
) -> None:
    """Serve a local stand-in for myKaarma's lead API until Ctrl+C or SIGTERM."""
    try:
        fake = FakeMyKaarma(
            address,
            port,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            username=username,
            password=password,
            behaviours=behaviours,
            seed=seed,
            allow_remote=allow_remote,
            access_log=access_log,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    serve_until_signal(fake, where=f"{address}:{port}", what="Fake myKaarma", as_json=as_json)
