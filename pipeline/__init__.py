"""Pure domain logic of leadpipe: no Celery, no kombu, no Redis.

Everything a lead goes through that can be decided without a broker lives here:
normalization, validation, vehicle resolution, routing, the myKaarma mapping and
client, and the backoff policy. `tasks/` only moves lead ids between queues and
calls into this package.
"""
