"""Exit codes of every leadpipe process, and the one table that maps errors to them.

CONTRACT section 6: 0 success, 1 some work failed or the lead is unknown, 2 bad
usage. Bad configuration is bad usage of the environment, so it exits 2 everywhere:
a command, `leadpipe worker` and a bare `celery -A tasks worker` refused at start.
An interrupt (Ctrl+C, or SIGTERM where a command turns it into one) exits 130,
128 + SIGINT, as shells report it.
"""

from __future__ import annotations

from typing import Final

from pipeline.errors import ConfigError

#: Everything asked was done.
EXIT_OK: Final = 0
#: Some of the work failed, or the lead is unknown, or a service (Redis, broker) is down.
EXIT_FAILED: Final = 1
#: Bad usage: click's own usage errors, and bad configuration (`ConfigError`).
EXIT_USAGE: Final = 2
#: Stopped by Ctrl+C.
EXIT_INTERRUPTED: Final = 130

#: The table: the first row whose class matches an error gives its exit code;
#: any other error a command expects is `EXIT_FAILED`.
EXIT_CODES: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (KeyboardInterrupt, EXIT_INTERRUPTED),
    (ConfigError, EXIT_USAGE),
)


def exit_code_for(error: BaseException) -> int:
    """The exit code of a process that stops on `error`."""
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_FAILED
