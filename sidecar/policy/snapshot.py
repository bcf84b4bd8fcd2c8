"""The policy in force: one immutable snapshot, swapped atomically.

Route reads ``holder.current`` once per request and uses that object throughout,
so a swap mid-request never mixes two policies. Assigning an attribute is atomic
in CPython, and all readers run on the server's event loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from sidecar.calibration.runtime import Calibrator
from sidecar.core.policy import Policy


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A policy with every calibrator it names loaded and warmed."""

    policy: Policy
    calibrators: Mapping[str, Calibrator]
    class_counts: Mapping[str, int]
    source: str


Listener = Callable[[Snapshot], None]


class SnapshotHolder:
    """The snapshot in force. With an audit key (the deployment's secret), every
    snapshot swapped in has its audit samples drawn with it, whatever its source."""

    def __init__(self, audit_key: bytes = b"") -> None:
        self.current: Snapshot | None = None
        self._listeners: list[Listener] = []
        self._audit_key = audit_key

    def subscribe(self, listener: Listener) -> None:
        """Call listener on every swap (health, metrics)."""
        self._listeners.append(listener)

    def labels(self, model: str, revision: int) -> tuple[str, ...]:
        """model's class labels under policy revision; () when the policy in force is
        another revision or has no such model."""
        snapshot = self.current
        if snapshot is None or snapshot.policy.revision != revision:
            return ()
        policy = snapshot.policy.models.get(model)
        return () if policy is None or policy.labels is None else policy.labels

    def swap(self, snapshot: Snapshot) -> None:
        if self._audit_key:
            snapshot = replace(snapshot, policy=snapshot.policy.with_audit_key(self._audit_key))
        self.current = snapshot
        for listener in self._listeners:
            listener(snapshot)
