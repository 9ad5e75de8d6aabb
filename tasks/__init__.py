"""The Celery side of leadpipe: `celery -A tasks worker` finds `app` here."""

from tasks import loops as _loops  # noqa: F401  (registers the worker's start-up check and loops)
from tasks import request as _request  # noqa: F401  (masks lead payloads in the pool's log)
from tasks.celery import app

__all__ = ["app"]
