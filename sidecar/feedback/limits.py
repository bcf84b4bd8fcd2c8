"""How much each principal may send: a token bucket per principal name, refilled at
``rate`` events per second up to ``burst``. A call whose events the bucket cannot
cover is refused whole (RateLimited: RESOURCE_EXHAUSTED), nothing stored, and the
caller may retry once the bucket has refilled; a sidecar's forwarder does so by
itself. Thread-safe (the service's calls run on a thread pool); the clock is
given."""

from __future__ import annotations

import threading

from sidecar.clock import Clock
from sidecar.errors import RateLimited


class RateLimits:
    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, name: str, events: int) -> None:
        """Spend events from name's bucket; RateLimited when it holds fewer."""
        now = self._clock.now()
        with self._lock:
            tokens, at = self._buckets.get(name, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if events > tokens:
                self._buckets[name] = (tokens, now)
                wait = (events - tokens) / self.rate
                raise RateLimited(
                    f"{name} sent more than its {self.rate:g} events/s: {events} now would"
                    f" need {wait:.2f} s more"
                )
            self._buckets[name] = (tokens - events, now)
