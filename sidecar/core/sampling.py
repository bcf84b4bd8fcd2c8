"""The audit sample: a stable share of AUTOMATED decisions also escalated for review,
so the accuracy of what is automated is measured, not assumed.

With a deployment's secret key (``HITL_AUDIT_KEY_FILE``) the draw is keyed BLAKE2b:
serving code cannot compute offline which request ids escape the audit, while
whoever holds the key can reproduce every draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b

from sidecar.core.hashing import bound, draw, salt_for


@dataclass(frozen=True, slots=True)
class AuditSampler:
    """Samples a share ``rate`` of request ids; the bound is computed once."""

    rate: float
    name: str
    key: bytes = field(default=b"", repr=False)
    _salt: bytes = field(init=False, repr=False, compare=False)
    _bound: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_salt", salt_for(f"audit:{self.name}"))
        if len(self.key) > 64:  # BLAKE2b's longest key
            object.__setattr__(self, "key", blake2b(self.key, digest_size=64).digest())
        object.__setattr__(self, "_bound", bound(self.rate))

    def should_sample(self, request_id: str) -> bool:
        if self._bound == 0:
            return False
        return draw(self._salt, request_id, self.key) < self._bound
