"""API tokens: random, shown once, stored hashed, compared in constant time.

A token reads ``tidal_<id>_<secret>``: the 12-hex-digit ``id`` is the row's key in the
store (not secret), the ``secret`` 43 URL-safe characters from :mod:`secrets` (256 bits),
stored only as its SHA-256. Checking a token looks its row up by ``id`` and compares the
secret's hash with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = ["NewToken", "hash_secret", "new_token", "secret_matches", "split_token"]

_TOKEN_RE: Final = re.compile(r"^tidal_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly minted token: ``token`` goes to its owner once, the rest to the store."""

    token: str
    token_id: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_token() -> NewToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewToken(f"tidal_{token_id}_{secret}", token_id, hash_secret(secret))


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, or ``None``."""
    match = _TOKEN_RE.match(token)
    if match is None:
        return None
    return match.group(1), match.group(2)


def secret_matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)
