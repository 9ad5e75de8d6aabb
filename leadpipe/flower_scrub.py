"""Task events made safe for Flower, whoever sent them.

The worker masks the arguments it reports (`tasks.request.MaskedRequest`), but Flower
also listens to events the worker never saw: a sender with `task_send_sent_event`
publishes its own `task-sent` event, arguments included, and a message the worker
refuses (a pickle, a `self` keyword) is never received, so Flower keeps that event
as the task's last word for as long as it runs. `scrub_event` is applied to every
event before Flower stores it: only the fields Flower shows are kept, and each is
kept only in a shape that cannot carry customer data.

    arguments     masked by `tasks.masking` (the partner stays); a lead id alone stays
    task name     one of ours, else `(unknown task)`
    result        a short outcome (`received; next leads.enrich`), else masked
    exception     `LeadDead('invalid (vehicle.vin)')` as is; any other: its type only
    traceback     frames (file, line, code) kept; exception messages masked
    ids, queues   kept when they look like ids and queue names, else dropped
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from tasks.consumer import usable_lead_id
from tasks.masking import VALUE_MASK, masked_args, masked_kwargs
from tasks.queues import DELIVER_TASK, ENRICH_TASK, INGEST_TASK, NOTIFY_TASK

#: The tasks a leadpipe worker runs; any other name is shown as UNKNOWN_TASK.
LEAD_TASKS = frozenset({INGEST_TASK, ENRICH_TASK, DELIVER_TASK, NOTIFY_TASK})
#: The tasks whose only argument is a lead id (shown as is when that is all they carry).
LEAD_ID_TASKS = frozenset({ENRICH_TASK, DELIVER_TASK})
UNKNOWN_TASK = "(unknown task)"
#: Task events Celery defines; any other `task-*` event is dropped.
TASK_EVENTS = frozenset(
    {
        "task-sent",
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-rejected",
        "task-revoked",
        "task-retried",
    }
)
#: Longest argument repr parsed to find the partner; longer ones are masked whole.
MAX_PARSED_REPR = 20_000

_NUMBERS = frozenset({"timestamp", "local_received", "utcoffset", "pid", "clock", "retries"})
_NUMBERS_OR_NONE = frozenset({"runtime", "signum"})
_FLAGS = frozenset({"terminated", "expired", "requeue"})
_IDS = frozenset({"uuid", "root_id", "parent_id"})
_ROUTES = frozenset({"queue", "exchange", "routing_key"})
_TIMES = frozenset({"eta", "expires"})
_ROUTE = re.compile(r"^[A-Za-z0-9._:-]{0,100}$")
_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ][0-9:.]+([+-]\d\d:\d\d|Z)?$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9@._:-]{1,200}$")
#: Results our tasks return (`tasks.outcomes.report`): words, a queue, a lead id.
_RESULT = re.compile(r"^'[A-Za-z0-9 ;:._@-]{0,240}'$")
#: `LeadDead('invalid (vehicle.vin, lead.email)')`: a reason and field paths only.
_LEAD_DEAD = re.compile(r"^(?:[\w.]+\.)?LeadDead\('[A-Za-z0-9 _.,()\[\]+-]{0,400}'\)$")
_LEAD_DEAD_LINE = re.compile(r"^(?:[\w.]+\.)?LeadDead: [A-Za-z0-9 _.,()\[\]+-]{0,400}$")
_EXCEPTION_TYPE = re.compile(r"^([A-Za-z_][\w.]{0,120})(\(|:|$)")
#: Traceback lines that carry no message of their own.
_TRACEBACK_HEADINGS = (
    "Traceback (most recent call last):",
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


def _parse(text: object) -> object:
    """A repr back to its value (`ast.literal_eval`: no code runs), or None."""
    if not isinstance(text, str):
        return text if isinstance(text, list | tuple | dict) else None
    if len(text) > MAX_PARSED_REPR:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def scrub_arguments(name: object, args: object, kwargs: object) -> tuple[str, str]:
    """(args, kwargs) reprs safe to show: a lead id alone as is, anything else masked."""
    parsed_args, parsed_kwargs = _parse(args), _parse(kwargs)
    if (
        name in LEAD_ID_TASKS
        and isinstance(parsed_args, list | tuple)
        and len(parsed_args) == 1
        and usable_lead_id(parsed_args[0])
        and parsed_kwargs in ({}, None)
        and kwargs in ("{}", {}, None)
    ):
        return repr(tuple(parsed_args)), "{}"
    return masked_args(parsed_args), masked_kwargs(parsed_kwargs)


def scrub_exception(text: object) -> str:
    """`LeadDead('...')` as is; any other exception by its type alone."""
    if not isinstance(text, str):
        return VALUE_MASK
    if _LEAD_DEAD.fullmatch(text):
        return text
    found = _EXCEPTION_TYPE.match(text)
    return f"{found.group(1)}({VALUE_MASK})" if found else VALUE_MASK


def scrub_traceback(text: object) -> str | None:
    """Frames kept (they show code, not data); each exception line cut to its type."""
    if not isinstance(text, str):
        return None
    lines = []
    for line in text.splitlines():
        quiet = not line.strip() or line.startswith((" ", "\t")) or line in _TRACEBACK_HEADINGS
        if quiet or _LEAD_DEAD_LINE.fullmatch(line):
            lines.append(line)
        else:
            found = _EXCEPTION_TYPE.match(line)
            lines.append(f"{found.group(1)}: {VALUE_MASK}" if found else VALUE_MASK)
    return "\n".join(lines)


def _scrub_field(key: str, value: Any) -> tuple[bool, Any]:
    """(keep, value) for one field of a task event other than the arguments."""
    if key in _NUMBERS:
        return isinstance(value, int | float) and not isinstance(value, bool), value
    if key in _NUMBERS_OR_NONE:
        return value is None or isinstance(value, int | float), value
    if key in _FLAGS:
        return isinstance(value, bool), value
    if key in _IDS:
        return value is None or usable_lead_id(value), value
    if key in _ROUTES:
        return value is None or (isinstance(value, str) and bool(_ROUTE.fullmatch(value))), value
    if key in _TIMES:
        return value is None or (isinstance(value, str) and bool(_TIME.fullmatch(value))), value
    if key == "hostname":
        return isinstance(value, str) and bool(_HOSTNAME.fullmatch(value)), value
    if key == "result":
        safe = isinstance(value, str) and bool(_RESULT.fullmatch(value))
        return True, value if safe else VALUE_MASK
    if key == "exception":
        return True, scrub_exception(value)
    if key == "traceback":
        return True, scrub_traceback(value)
    return False, None


def scrub_event(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A copy of `event` that Flower may store and show, or None to drop it.

    Worker events (`worker-online`, heartbeats) pass as they are: they describe the
    worker, never a lead. Task events keep the fields Flower shows, scrubbed."""
    kind = event.get("type")
    if not isinstance(kind, str):
        return None
    if kind.startswith("worker-"):
        return dict(event)
    if kind not in TASK_EVENTS:
        return None
    hostname = event.get("hostname")
    if not (isinstance(hostname, str) and _HOSTNAME.fullmatch(hostname)):
        return None  # Flower files every event under its host: it must be showable
    if not usable_lead_id(event.get("uuid")):
        return None
    clean: dict[str, Any] = {"type": kind}
    for key, value in event.items():
        if key in ("type", "name", "args", "kwargs"):
            continue
        keep, shown = _scrub_field(key, value)
        if keep:
            clean[key] = shown
    if "name" in event:
        clean["name"] = event["name"] if event["name"] in LEAD_TASKS else UNKNOWN_TASK
    if "args" in event or "kwargs" in event:
        clean["args"], clean["kwargs"] = scrub_arguments(
            event.get("name"), event.get("args"), event.get("kwargs")
        )
    return clean
