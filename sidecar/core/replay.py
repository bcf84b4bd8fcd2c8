"""The replay window: recent decisions by request_id, so a retried request gets the
same answer and is never escalated twice. Bounded in size and age; pure (the caller
passes the time)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    expires: float


class ReplayCache(Generic[T]):
    """At most ``capacity`` entries, each kept ``ttl`` seconds (oldest evicted first)."""

    def __init__(self, capacity: int, ttl: float) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity must be >= 1 and ttl > 0")
        self._capacity = capacity
        self._ttl = ttl
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()

    def get(self, key: str, now: float) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry.value

    def put(self, key: str, value: T, now: float) -> None:
        self._entries[key] = _Entry(value, now + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        self._expire(now)

    def _expire(self, now: float) -> None:
        # Entries are in insertion order and share one ttl, so the oldest expire first.
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
