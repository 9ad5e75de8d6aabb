"""The `leadpipe` command: one click group, one module per command (or command group).

Exit codes are named in `leadpipe.cli.common`: 0 success, 1 some work failed or the
lead is unknown, 2 bad usage (click's own).
"""

from __future__ import annotations

import importlib

import click

#: Modules that each define one command or group named like the module's `COMMAND`.
COMMAND_MODULES = (
    "leadpipe.cli.validate",
    "leadpipe.cli.fake_mykaarma",
    "leadpipe.cli.worker",
    "leadpipe.cli.flower",
    "leadpipe.cli.metrics",
    "leadpipe.cli.demo",
    "leadpipe.cli.submit",
    "leadpipe.cli.status",
    "leadpipe.cli.dlq",
    "leadpipe.cli.stats",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """leadpipe: partner leads to the myKaarma dealer CRM, on Celery and Redis."""


for _module_name in COMMAND_MODULES:
    _module = importlib.import_module(_module_name)
    main.add_command(_module.COMMAND)
