"""What every policy source is: something that keeps a SnapshotHolder current until
cancelled, and counts what it refused. Implementations: a local file
(``file_source``) and the registry (``registry_source``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from sidecar.errors import CalibratorError, PolicyError

# Why a policy was refused (the ``reason`` attribute of hitl.policy.rejected).
SIGNATURE = "signature"  # unsigned, altered, or signed by another key
SCHEMA = "schema"  # the document is not a valid policy
CALIBRATOR = "calibrator"  # an artefact is missing, not ONNX, the wrong version, broken
SHA256 = "sha256"  # downloaded bytes do not hash to what the policy names
STALE_REVISION = "stale_revision"  # older than the revision in force


@dataclass
class SourceStats:
    """Read by the metrics on the exporter's thread; written on the event loop."""

    reconnects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class PolicySource(Protocol):
    """Keeps a SnapshotHolder current until cancelled; never raises on a bad policy
    or an unreachable origin (it logs, counts and keeps the snapshot in force)."""

    stats: SourceStats

    async def run(self) -> None: ...


def rejection_reason(exc: PolicyError) -> str:
    """CALIBRATOR when a calibrator failed to load, SCHEMA for anything else."""
    return CALIBRATOR if isinstance(exc.__cause__, CalibratorError) else SCHEMA
