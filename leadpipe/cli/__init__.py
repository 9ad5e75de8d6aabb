"""The `leadpipe` command: one click group, one module per command (or command group).

Every command runs behind one settings-and-errors gate (`leadpipe.cli.gate`); exit
codes come from one table (`leadpipe.exit_codes`): 0 success, 1 some work failed or
the lead is unknown, 2 bad usage or bad configuration, 130 interrupted.

Commands are imported under `*_command` names so that `leadpipe.cli.validate` (and the
others) stays the module, not the function.
"""

from __future__ import annotations

import click

from leadpipe.cli.dealers import dealers as dealers_command
from leadpipe.cli.demo import demo as demo_command
from leadpipe.cli.dlq import dlq as dlq_command
from leadpipe.cli.fake_mykaarma import fake_mykaarma as fake_mykaarma_command
from leadpipe.cli.fake_partner import fake_partner as fake_partner_command
from leadpipe.cli.flower import flower as flower_command
from leadpipe.cli.forget import forget as forget_command
from leadpipe.cli.metrics import metrics as metrics_command
from leadpipe.cli.notifications import notifications as notifications_command
from leadpipe.cli.stats import stats as stats_command
from leadpipe.cli.status import status as status_command
from leadpipe.cli.submit import submit as submit_command
from leadpipe.cli.validate import validate as validate_command
from leadpipe.cli.worker import worker as worker_command

COMMANDS = (
    validate_command,
    fake_mykaarma_command,
    fake_partner_command,
    worker_command,
    flower_command,
    metrics_command,
    demo_command,
    submit_command,
    status_command,
    dlq_command,
    stats_command,
    dealers_command,
    forget_command,
    notifications_command,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """leadpipe: partner leads to the myKaarma dealer CRM, on Celery and Redis."""


for _command in COMMANDS:
    main.add_command(_command)
