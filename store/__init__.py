"""Redis persistence of leadpipe: lead records, dedupe claims, retry schedule, dead letters.

The lead record in Redis is the source of truth, not the broker: every state change
is one Lua script, so a crash between two steps never leaves a half-written lead.
"""
