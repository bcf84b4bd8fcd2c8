"""Stable hashes: the same key gives the same draw on every machine and restart.

Used for experiment arms, audit sampling and escalation ids. BLAKE2b is in the
standard library, fast on short keys, and not Python's per-process salted hash()."""

from __future__ import annotations

from hashlib import blake2b

_SPAN = 1 << 64


def draw(salt: bytes, key: str, secret: bytes = b"") -> int:
    """A uniform integer in [0, 2**64) determined by salt (16 bytes) and key; with a
    secret (up to 64 bytes) keyed BLAKE2b, which nobody without the secret can
    predict."""
    digest = blake2b(key.encode(), digest_size=8, salt=salt, key=secret).digest()
    return int.from_bytes(digest)


def bound(rate: float) -> int:
    """The draw bound below which a share ``rate`` of keys falls."""
    return round(min(max(rate, 0.0), 1.0) * _SPAN)


def salt_for(name: str) -> bytes:
    """A 16-byte salt derived from a name, so independent draws stay independent."""
    return blake2b(name.encode(), digest_size=16).digest()


def escalation_id(model: str, request_id: str) -> str:
    """The escalation's id: derived from (model, request_id), so a replayed request
    maps to the same id even after a restart, and sinks can deduplicate on it."""
    digest = blake2b(f"{model}\x00{request_id}".encode(), digest_size=16).hexdigest()
    return f"esc-{digest}"
