"""`leadpipe metrics`: serve leadpipe's Prometheus metrics (or print one scrape).

The exporter reads Redis at scrape time (`leadpipe.metrics`); it holds no state, so
one exporter per deployment is enough and it may restart at will. The metrics are
counts only, never lead data.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from types import FrameType

import click
from prometheus_client import generate_latest
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from config import Settings
from leadpipe.cli.gate import with_settings
from leadpipe.cli.options import bind_options, json_option
from leadpipe.cli.output import fail, print_json
from leadpipe.metrics import DEFAULT_PORT, build_registry


class Scrape:
    """One scrape, taken once and printable as Prometheus text or JSON."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metrics: list[Metric] = list(registry.collect())

    def collect(self) -> list[Metric]:
        return self.metrics

    def text(self) -> str:
        return generate_latest(self).decode()

    def samples(self) -> list[dict[str, object]]:
        """`{name, labels, value}` for every sample."""
        return [
            {"name": s.name, "labels": dict(s.labels), "value": s.value}
            for metric in self.metrics
            for s in metric.samples
        ]

    @property
    def redis_up(self) -> bool:
        return any(s["name"] == "leadpipe_redis_up" and s["value"] for s in self.samples())


def _serve(registry: CollectorRegistry, address: str, port: int, as_json: bool) -> None:
    try:
        server, thread = start_http_server(port, address, registry=registry)
    except OSError as exc:
        fail(f"cannot serve on {address}:{port}: {exc.strerror or exc}")
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{server.server_port}/metrics"
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(json.dumps({"url": url}) if as_json else url)
        if not as_json:
            click.echo("Serving leadpipe metrics; Ctrl+C to stop.", err=True)
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@click.command("metrics")
@bind_options(DEFAULT_PORT, any_port=True)
@click.option("--once", is_flag=True, help="Print one scrape to standard output and exit.")
@json_option
@with_settings
def metrics(settings: Settings, address: str, port: int, once: bool, as_json: bool) -> None:
    """Serve queue depths, lead counts, attempts and latency for Prometheus."""
    registry = build_registry(settings)
    if once:
        scrape = Scrape(registry)
        if as_json:
            print_json(scrape.samples())
        else:
            sys.stdout.write(scrape.text())
        if not scrape.redis_up:
            fail("Redis could not be read (leadpipe_redis_up 0)")
        return
    _serve(registry, address, port, as_json)
