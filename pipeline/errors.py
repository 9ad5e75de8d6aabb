"""The one exception hierarchy of leadpipe.

    LeadError
    ├── PermanentError            retrying cannot help: the lead goes to the dead letters
    │   ├── InvalidLead           the partner's payload breaks a rule of PartnerLeadRequest
    │   ├── Unroutable            no dealer is configured for the lead
    │   ├── Rejected              myKaarma answered with a 4xx other than 408/425/429
    │   └── RoutingFileError      the routing TOML cannot be used (bad syntax or values)
    └── TransientError            the same request may succeed later
        └── MyKaarmaUnavailable   5xx, 408, 425, 429, timeout or connection error

Context (lead id, HTTP status) is keyword-only so that call sites read clearly.
Messages never contain customer data or credentials.
"""

from __future__ import annotations


class LeadError(Exception):
    """Root of every error leadpipe raises on purpose."""

    def __init__(self, message: str, *, lead_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.lead_id = lead_id


class PermanentError(LeadError):
    """A failure that no retry can fix; the lead is dead-lettered."""


class InvalidLead(PermanentError):
    """The payload breaks one or more validation rules (one message per field)."""

    def __init__(
        self,
        message: str,
        *,
        lead_id: str | None = None,
        errors: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message, lead_id=lead_id)
        self.errors = list(errors or [])


class Unroutable(PermanentError):
    """No routing section gives the lead a dealer uuid."""


class RoutingFileError(PermanentError):
    """The routing file cannot be read, parsed or validated."""


class Rejected(PermanentError):
    """myKaarma refused the lead with a 4xx that retrying will not change."""

    def __init__(
        self,
        message: str,
        *,
        lead_id: str | None = None,
        status: int,
        error: object | None = None,
    ) -> None:
        super().__init__(message, lead_id=lead_id)
        self.status = status
        self.error = error


class TransientError(LeadError):
    """A failure that may go away: the delivery is retried with backoff."""


class MyKaarmaUnavailable(TransientError):
    """myKaarma did not accept the lead this time (5xx, 408/425/429, timeout, network)."""

    def __init__(
        self,
        message: str,
        *,
        lead_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, lead_id=lead_id)
        self.status = status
        self.retry_after = retry_after
