"""A blocking client of the review queue, for the reviewer CLI, tools and tests.

One channel for the client's lifetime; a deadline on every call (Export's is long,
it streams every resolved item). Errors are grpc.RpcError with the server's status
code and a message naming the field. (The sidecar's forwarder has its own sink,
``sidecar.escalation.sinks.review``, on the same Submit.)

    with ReviewClient("127.0.0.1:7432") as client:
        item = client.claim("alice")
        client.resolve(item.escalation_id, "alice", Verdict.ACCEPT)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.escalation.messages import to_message
from sidecar.escalation.record import Escalation
from sidecar.review.config import DEFAULT_REVIEW_LISTEN
from sidecar.review.item import ItemState, ReviewItem, Verdict
from sidecar.review.messages import item_from_message, submitted_from_message
from sidecar.review.queue import Submitted

DEFAULT_TIMEOUT = 5.0
EXPORT_TIMEOUT = 600.0


class ReviewClient:
    def __init__(self, target: str = DEFAULT_REVIEW_LISTEN, timeout: float = DEFAULT_TIMEOUT):
        self.target = target
        self._timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = rpb_grpc.ReviewQueueStub(self._channel)

    def submit(self, escalations: Sequence[Escalation]) -> list[Submitted]:
        request = rpb.SubmitRequest(escalations=[to_message(e) for e in escalations])
        response = self._stub.Submit(request, timeout=self._timeout)
        return [submitted_from_message(result) for result in response.results]

    def claim(self, reviewer: str, model: str = "", lease_seconds: float = 0.0) -> ReviewItem:
        request = rpb.ClaimRequest(reviewer=reviewer, model=model, lease_seconds=lease_seconds)
        return item_from_message(self._stub.Claim(request, timeout=self._timeout).item)

    def resolve(
        self,
        escalation_id: str,
        reviewer: str,
        verdict: Verdict,
        *,
        corrected_class: int | None = None,
        corrected_label: str = "",
        rationale: str = "",
        time_to_label_seconds: float = 0.0,
    ) -> ReviewItem:
        request = rpb.ResolveRequest(
            escalation_id=escalation_id,
            reviewer=reviewer,
            verdict=rpb.Verdict.Value(f"VERDICT_{verdict.value}"),
            corrected_class=corrected_class,
            corrected_label=corrected_label,
            rationale=rationale,
            time_to_label_seconds=time_to_label_seconds,
        )
        return item_from_message(self._stub.Resolve(request, timeout=self._timeout).item)

    def list_items(
        self, state: ItemState | None = None, model: str = "", tier: str = "", limit: int = 0
    ) -> list[ReviewItem]:
        request = rpb.ListRequest(
            state=rpb.ItemState.Value(f"ITEM_STATE_{state.value if state else 'UNSPECIFIED'}"),
            model=model,
            tier=dpb.Tier.Value(f"TIER_{tier or 'UNSPECIFIED'}"),
            limit=limit,
        )
        response = self._stub.List(request, timeout=self._timeout)
        return [item_from_message(item) for item in response.items]

    def export(self, model: str = "", since: float = 0.0) -> Iterator[ReviewItem]:
        request = rpb.ExportRequest(model=model, resolved_since=since)
        for item in self._stub.Export(request, timeout=EXPORT_TIMEOUT):
            yield item_from_message(item)

    def serving(self) -> bool:
        """Whether the queue answers its health check SERVING."""
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service="hitl.v1.ReviewQueue"), timeout=1.0
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()
