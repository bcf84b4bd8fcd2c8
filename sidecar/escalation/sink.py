"""Where escalations go before Route answers. A sink's ``submit`` returns only once
the escalation is recorded, or raises EscalationRefused (Route then answers
UNAVAILABLE: the caller must not act on a review nobody will see)."""

from __future__ import annotations

from typing import Protocol

from sidecar.escalation.record import Escalation


class EscalationSink(Protocol):
    def submit(self, escalation: Escalation) -> None: ...

    def close(self) -> None: ...


class InMemorySink:
    """Keeps escalations in a list; tests use it instead of a mock."""

    def __init__(self) -> None:
        self.escalations: list[Escalation] = []

    def submit(self, escalation: Escalation) -> None:
        self.escalations.append(escalation)

    def close(self) -> None:
        return None
