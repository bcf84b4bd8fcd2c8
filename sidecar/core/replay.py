"""The replay window: recent decisions by request_id, so a retried request gets the
same answer and is never escalated twice. Bounded in size and age; pure (the caller
passes the time).

The window holds up to a hundred thousand entries for minutes, so each entry is one
flat tuple of plain values (str, bytes, int, float, bool, None): the garbage
collector stops tracking such a tuple at its first collection, and a flat tuple is
the smallest container Python has for a handful of fields. Held as objects, the
entries made every full collection walk them all, a pause of tens of milliseconds
with a full window (measured: see docs/performance.md#the-replay-windows-flat-tuples)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any


class ReplayCache:
    """At most ``capacity`` entries, each kept ``ttl`` seconds (oldest evicted first).
    Values are tuples of plain values; each is kept with its expiry appended."""

    def __init__(self, capacity: int, ttl: float) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("capacity must be >= 1 and ttl > 0")
        self._capacity = capacity
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[Any, ...]] = OrderedDict()  # (*value, expiry)

    def get(self, key: str, now: float) -> tuple[Any, ...] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[-1] <= now:
            del self._entries[key]
            return None
        return entry[:-1]

    def put(self, key: str, value: tuple[Any, ...], now: float) -> None:
        self.put_many([(key, value)], now)

    def put_many(self, items: Iterable[tuple[str, tuple[Any, ...]]], now: float) -> None:
        """``put`` for each (key, value), in order (a batch's decisions)."""
        entries, expiry = self._entries, now + self._ttl
        for key, value in items:
            entries[key] = (*value, expiry)
            entries.move_to_end(key)
        while len(entries) > self._capacity:
            entries.popitem(last=False)
        self._expire(now)

    def _expire(self, now: float) -> None:
        # Entries are in insertion order and share one ttl, so the oldest expire first.
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry[-1] > now:
                return
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
