"""The review queue sink sends each escalation with its model's class labels, looked
up as it sends (as the feedback sink does); without a lookup, or for a revision no
longer in force, without them."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from sidecar.escalation.messages import LabelsOf
from sidecar.escalation.sinks.base import Spooled
from sidecar.escalation.sinks.review import ReviewQueueSink
from sidecar.settings import ClientCredentials
from tests.escalations import escalation


class Recording:
    """Stands for the queue's stub: keeps each request, accepts every escalation."""

    def __init__(self) -> None:
        self.requests: list[rpb.SubmitRequest] = []

    async def Submit(self, request: rpb.SubmitRequest, **_: Any) -> rpb.SubmitResponse:
        self.requests.append(request)
        return rpb.SubmitResponse(
            results=[
                rpb.SubmitResult(escalation_id=e.escalation_id, status=rpb.SubmitResult.ACCEPTED)
                for e in request.escalations
            ]
        )


def labels_of(model: str, revision: int) -> tuple[str, ...]:
    return ("a", "b", "c") if (model, revision) == ("m", 3) else ()


def sent(lookup: LabelsOf | None, *revisions: int) -> list[list[str]]:
    """The labels each escalation (one per revision, as the spool holds it) went with."""
    recording = Recording()

    async def deliver() -> None:
        sink = ReviewQueueSink("127.0.0.1:1", 1.0, ClientCredentials(), lookup)
        sink._stub = recording  # type: ignore[assignment]
        payloads = [
            orjson.dumps(escalation(f"e{r}", policy_revision=r).to_dict()) for r in revisions
        ]
        batch = [
            Spooled(p, orjson.loads(p), f"e{r}") for p, r in zip(payloads, revisions, strict=True)
        ]
        assert await sink.deliver(batch) == []
        await sink.close()

    asyncio.run(deliver())
    return [list(e.labels) for e in recording.requests[0].escalations]


def test_escalations_go_with_the_labels_of_their_revision() -> None:
    assert sent(labels_of, 3, 2) == [["a", "b", "c"], []]


def test_a_sink_without_a_lookup_sends_none() -> None:
    assert sent(None, 3) == [[]]
