"""The replay window: bounded by size and age."""

from __future__ import annotations

import pytest

from sidecar.core.replay import ReplayCache


def test_hit_within_ttl_miss_after() -> None:
    """An entry is returned until its ttl passes."""
    cache = ReplayCache(10, ttl=60.0)
    cache.put("a", ("A", 1), now=0.0)
    assert cache.get("a", now=59.9) == ("A", 1)
    assert cache.get("a", now=60.0) is None
    assert len(cache) == 0


def test_capacity_evicts_oldest() -> None:
    """Past capacity the oldest entry goes first."""
    cache = ReplayCache(2, ttl=60.0)
    for i, key in enumerate("abc"):
        cache.put(key, (i,), now=float(i))
    assert cache.get("a", 3.0) is None
    assert (cache.get("b", 3.0), cache.get("c", 3.0)) == ((1,), (2,))


def test_expired_entries_are_dropped_on_put() -> None:
    """Old entries do not pile up when they are never read again."""
    cache = ReplayCache(100, ttl=1.0)
    for i in range(50):
        cache.put(str(i), (i,), now=float(i))
    assert len(cache) == 1


def test_bad_bounds_refused() -> None:
    """A zero capacity or ttl is a configuration error."""
    with pytest.raises(ValueError, match="capacity"):
        ReplayCache(0, 1.0)
