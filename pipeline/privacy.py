"""Finding one person's leads without keeping their address in an index (CONTRACT 7).

`leadpipe forget --email ADDRESS` needs every lead whose email, as received or
normalized, is that address. The store keeps an index keyed by `email_digest`: an
HMAC-SHA256 of the address in its comparison form (`address_key`: surrounding spaces
dropped, lower-cased, as normalization does) under a per-installation secret, so the
index holds no address and a digest cannot be reversed by hashing guesses without
that secret.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from typing import Any

from email_validator import EmailNotValidError, validate_email

#: Hex characters of a digest kept in a key name (128 bits: no collisions in practice).
DIGEST_HEX_CHARS = 32
#: Longest address looked at, characters (RFC 5321: 254 in a path).
MAX_ADDRESS_CHARS = 320


def address_key(address: str) -> str:
    """The form two spellings of one address share: trimmed, NFC, lower-cased."""
    return unicodedata.normalize("NFC", address.strip()).lower()


def email_digest(secret: bytes, address: str) -> str:
    """The index key part for `address` under this installation's `secret`."""
    mac = hmac.new(secret, address_key(address).encode("utf-8", "surrogatepass"), hashlib.sha256)
    return mac.hexdigest()[:DIGEST_HEX_CHARS]


def payload_email(payload: Any) -> str | None:
    """The email a payload carries as received (`lead.email`, a string), if any."""
    lead = payload.get("lead") if isinstance(payload, dict) else None
    value = lead.get("email") if isinstance(lead, dict) else None
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ADDRESS_CHARS:
        return value
    return None


def address_problem(address: str) -> str | None:
    """Why `address` cannot be an email address to forget, or None when it can."""
    text = address.strip()
    if not text:
        return "the address is empty"
    if len(text) > MAX_ADDRESS_CHARS:
        return f"the address is longer than {MAX_ADDRESS_CHARS} characters"
    try:
        validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None
