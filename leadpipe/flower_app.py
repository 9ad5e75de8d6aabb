"""Flower with leadpipe's guards: `python -m leadpipe.flower_app -A tasks flower ...`.

`leadpipe flower` runs this module instead of `celery flower`. It is Celery's own
command line, with three changes made to Flower before it starts:

- every event passes through `leadpipe.flower_scrub.scrub_event` before Flower
  stores it, so no sender (`task_send_sent_event`, a message the worker refuses)
  can put customer data on a Flower page or API answer;
- Flower's broker API (Broker page, `/api/queues/length`) gets the plain broker URL:
  Flower picks its client by URL scheme, and the worker's connection names
  leadpipe's own Redis transport (`tasks.transport:LeadRedisTransport://...`),
  which Flower answered with 404. RabbitMQ queue lengths come from its management
  API (`leadpipe.flower_broker`);
- remote control (shutdown, pool restart/grow/shrink, autoscale, consumers, revoke,
  rate and time limits, sending tasks) is off unless
  `LEADPIPE_FLOWER_ALLOW_CONTROL=1`: Flower's read-only mode, forced on whatever
  Flower's own options or configuration file say (they can only add it).
"""

from __future__ import annotations

import sys
from functools import cached_property
from typing import Any

from flower import app as flower_app_module
from flower import command as flower_command
from flower import views as flower_views
from flower.app import Flower
from flower.events import Events
from kombu.utils.url import maybe_sanitize_url

from config import load_settings
from leadpipe.flower_broker import lead_broker, plain_broker_url
from leadpipe.flower_scrub import scrub_event

#: Columns of Flower's task list: what ran, on which lead, and what became of it.
#: For `leads.ingest` the UUID is the lead id; the other tasks carry it as their
#: argument. Result and Exception say what became of the lead (`LeadDead: invalid
#: (vehicle.vin)`).
TASKS_COLUMNS = "name,uuid,args,state,exception,result,kwargs,received,runtime,worker"


class ScrubbedEvents(Events):
    """Flower's event listener, scrubbing each event before Flower's state sees it."""

    def on_event(self, event: dict[str, Any]) -> None:
        clean = scrub_event(event)
        if clean is not None:
            super().on_event(clean)


class LeadFlower(Flower):
    """Flower with the plain broker URL and read-only unless control is allowed."""

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is not None:
            allowed = load_settings().flower_allow_control
            options.read_only = bool(options.read_only) or not allowed
        super().__init__(options=options, **kwargs)

    @cached_property
    def broker_uri_with_password(self) -> str:
        return plain_broker_url(str(self.capp.conf.broker_url))

    @cached_property
    def broker_uri(self) -> str:
        return str(maybe_sanitize_url(self.broker_uri_with_password))


def install() -> None:
    """Make Celery's `flower` command build a LeadFlower with scrubbed events."""
    flower_app_module.Events = ScrubbedEvents
    flower_command.Flower = LeadFlower
    flower_views.Broker = lead_broker  # what every handler's get_broker() builds


def main() -> None:
    install()
    from celery.bin.celery import main as celery_main

    sys.argv[0] = "celery"
    sys.exit(celery_main())


if __name__ == "__main__":
    main()
