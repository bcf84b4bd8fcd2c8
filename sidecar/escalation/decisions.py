"""What a sidecar sends the feedback service besides its escalations (which reach it
through the escalation forwarder): a recorded sample of its automated decisions, and
the outcomes serving code reports with RecordOutcome. Both go into a spool of their
own (``decisions/`` under the state directory), which a second forwarder delivers.

Durability. An outcome is as durable as an escalation: RecordOutcome answers once
it is in the spool and, with fsync on, synced. A sampled decision record is written
to the spool before Route answers but nobody waits for its fsync: it survives a
killed process, and a lost machine only once the forwarder has synced it (within
about a second). A decision record the spool cannot take (its budget is full) is
logged and counted, and Route answers as usual: the decision stands, only its
record for the feedback service is missing.

Every record is keyed for deduplication: a decision by its request_id, an outcome
by a digest of what it says (the same outcome sent twice is one event)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import orjson
import structlog

from sidecar.errors import EscalationRefused
from sidecar.escalation.forwarder import Stream
from sidecar.escalation.recorder import SpoolRecorder

log = structlog.get_logger("hitl.decisions")

_CRC_SPAN = 1 << 32
_SEED = zlib.crc32(b"decision-record")  # draws independent of other CRC-32 uses
DEFAULT_SAMPLE = 0.05  # of automated decisions, when the sidecar has a feedback service
DECISION = "decision"
OUTCOME = "outcome"
# Decision records are keyed by request_id, outcomes by feedback_id: the forwarder
# knows each record by its "key" field.
DECISIONS = Stream("a decision record or an outcome", "key", frozenset({"kind", "key"}), True)


class DecisionStream:
    """``sample``: the share of automated decisions recorded (the same request id is
    always drawn the same way)."""

    def __init__(self, recorder: SpoolRecorder, sample: float) -> None:
        self.recorder = recorder
        self.sample = sample
        self.dropped = 0
        self._bound = round(min(max(sample, 0.0), 1.0) * _CRC_SPAN)

    def sampled(self, request_id: str) -> bool:
        # CRC-32, not the audit sample's BLAKE2b: a draw on every automated Route, and
        # a tenth of the cost; which ids are recorded needs no secret (the audit does).
        return zlib.crc32(request_id.encode(), _SEED) < self._bound

    def sampled_of(self, request_ids: Sequence[str]) -> list[int]:
        """The positions of the sampled ones among request_ids (a batch's)."""
        crc, bound = zlib.crc32, self._bound
        return [k for k, rid in enumerate(request_ids) if crc(rid.encode(), _SEED) < bound]

    def decisions(self, records: Sequence[dict[str, Any]]) -> None:
        """Write sampled automated decisions' records (an escalation's fields, without
        its id, input and context) in one write; never raises: records the spool
        refuses are logged and counted."""
        payloads = [
            orjson.dumps(
                {
                    **record,
                    "kind": DECISION,
                    "key": record["request_id"],
                    "inclusion_probability": self.sample,
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            for record in records
        ]
        if not payloads:
            return
        try:
            self.recorder.write_many(payloads)
        except EscalationRefused as exc:
            self.dropped += len(records)
            log.error("decision.not_recorded", records=len(records), error=str(exc))

    def outcome(self, fields: dict[str, Any]) -> int:
        """Write an outcome (request_id, model, true_class, true_label, source,
        occurred_at); its ticket for ``recorder.durable``. EscalationRefused when the
        spool cannot take it (RecordOutcome then answers UNAVAILABLE)."""
        said = orjson.dumps(
            [fields["model"], fields["request_id"], fields["true_class"], fields["true_label"]]
        )
        key = "outcome-" + blake2b(said, digest_size=16).hexdigest()
        return self.recorder.write(orjson.dumps({**fields, "kind": OUTCOME, "key": key}))
