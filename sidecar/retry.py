"""How the forwarder waits after a failed delivery: exponential backoff with full
jitter, and a circuit breaker that stops hammering a sink that keeps failing. Pure:
time and randomness come in as arguments."""

from __future__ import annotations

import random
from enum import Enum


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number attempt (0-based): uniform in
    [0, min(cap, base * 2**attempt)], so many sidecars retrying one sink spread out."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(attempt, 62)))


class Circuit(Enum):
    CLOSED = 0  # deliveries flow
    HALF_OPEN = 1  # the cool-down passed: the next delivery is a trial
    OPEN = 2  # failing: no delivery until the cool-down passes


class CircuitBreaker:
    """Opens after ``failures`` consecutive failed deliveries and stays open for
    ``reset_seconds``; the first delivery after that is a trial that closes it on
    success or opens it again on failure."""

    def __init__(self, failures: int, reset_seconds: float) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._consecutive = 0
        self._open_until: float | None = None

    def state(self, now: float) -> Circuit:
        if self._open_until is None:
            return Circuit.CLOSED
        return Circuit.OPEN if now < self._open_until else Circuit.HALF_OPEN

    def wait(self, now: float) -> float:
        """Seconds until a delivery may be tried."""
        return 0.0 if self._open_until is None else max(0.0, self._open_until - now)

    def failure(self, now: float) -> bool:
        """Record a failed delivery; True when this opens the circuit."""
        self._consecutive += 1
        if self.state(now) is Circuit.HALF_OPEN or (
            self._open_until is None and self._consecutive >= self.failures
        ):
            self._open_until = now + self.reset_seconds
            return True
        return False

    def success(self) -> bool:
        """Record a delivery; True when this closes an open circuit."""
        was_open = self._open_until is not None
        self._consecutive = 0
        self._open_until = None
        return was_open
