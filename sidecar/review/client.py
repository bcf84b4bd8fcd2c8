"""A blocking client of the review queue, for the reviewer CLI, tools and tests.

One channel for the client's lifetime; a deadline on every call (Export's is long,
it streams every resolved item). Credentials go with every call: a bearer token as
metadata, and over TLS the CA that signed the queue's certificate plus, for mTLS, a
client certificate. The queue knows the caller by them: a claim or a verdict is the
caller's own unless a lead names the reviewer it acts for. Errors are grpc.RpcError
with the server's status code and a message naming the field. (The sidecar's
forwarder has its own sink, ``sidecar.escalation.sinks.review``, on the same Submit.)

    with ReviewClient("127.0.0.1:7432", token) as client:
        item = client.claim()
        client.resolve(item.escalation_id, Verdict.ACCEPT)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.escalation.messages import to_message
from sidecar.escalation.record import Escalation
from sidecar.review.item import ItemState, ReviewItem, Verdict
from sidecar.review.messages import item_from_message, submitted_from_message
from sidecar.review.queue import Submitted
from sidecar.serving import ServiceClient

DEFAULT_TIMEOUT = 5.0
EXPORT_TIMEOUT = 600.0


class ReviewClient(ServiceClient):
    default_timeout = DEFAULT_TIMEOUT
    service = "hitl.v1.ReviewQueue"

    @functools.cached_property
    def _stub(self) -> rpb_grpc.ReviewQueueStub:
        return rpb_grpc.ReviewQueueStub(self._channel)

    def submit(self, escalations: Sequence[Escalation]) -> list[Submitted]:
        request = rpb.SubmitRequest(escalations=[to_message(e) for e in escalations])
        response = self._stub.Submit(request, metadata=self._metadata, timeout=self._timeout)
        return [submitted_from_message(result) for result in response.results]

    def claim(
        self, model: str = "", lease_seconds: float = 0.0, *, reviewer: str = ""
    ) -> ReviewItem:
        """The most urgent open item, leased to the caller (or, for a lead, to reviewer)."""
        request = rpb.ClaimRequest(reviewer=reviewer, model=model, lease_seconds=lease_seconds)
        response = self._stub.Claim(request, metadata=self._metadata, timeout=self._timeout)
        return item_from_message(response.item)

    def resolve(
        self,
        escalation_id: str,
        verdict: Verdict,
        *,
        reviewer: str = "",
        corrected_class: int | None = None,
        corrected_label: str = "",
        rationale: str = "",
        time_to_label_seconds: float = 0.0,
        evidence: str = "",
    ) -> ReviewItem:
        request = rpb.ResolveRequest(
            escalation_id=escalation_id,
            reviewer=reviewer,
            verdict=rpb.Verdict.Value(f"VERDICT_{verdict.value}"),
            corrected_class=corrected_class,
            corrected_label=corrected_label,
            rationale=rationale,
            time_to_label_seconds=time_to_label_seconds,
            evidence=evidence,
        )
        response = self._stub.Resolve(request, metadata=self._metadata, timeout=self._timeout)
        return item_from_message(response.item)

    def release(self, escalation_id: str, *, reviewer: str = "") -> ReviewItem:
        """Give back an item the caller (or, for a lead, reviewer) holds, unresolved."""
        request = rpb.ReleaseRequest(escalation_id=escalation_id, reviewer=reviewer)
        response = self._stub.Release(request, metadata=self._metadata, timeout=self._timeout)
        return item_from_message(response.item)

    def list_items(
        self, state: ItemState | None = None, model: str = "", tier: str = "", limit: int = 0
    ) -> list[ReviewItem]:
        request = rpb.ListRequest(
            state=rpb.ItemState.Value(f"ITEM_STATE_{state.value if state else 'UNSPECIFIED'}"),
            model=model,
            tier=dpb.Tier.Value(f"TIER_{tier or 'UNSPECIFIED'}"),
            limit=limit,
        )
        response = self._stub.List(request, metadata=self._metadata, timeout=self._timeout)
        return [item_from_message(item) for item in response.items]

    def export(self, model: str = "", since: float = 0.0) -> Iterator[ReviewItem]:
        request = rpb.ExportRequest(model=model, resolved_since=since)
        for item in self._stub.Export(request, metadata=self._metadata, timeout=EXPORT_TIMEOUT):
            yield item_from_message(item)

    def bulk_accept(
        self,
        model: str,
        min_confidence: float,
        *,
        rule_id: str = "",
        tier: str = "",
        limit: int = 0,
        dry_run: bool = False,
    ) -> rpb.BulkAcceptResponse:
        """A lead's accept of the open items of model at or above min_confidence (of
        rule_id and tier when given), up to limit (0: 100): the batch id and the
        escalation ids it resolved (dry run: would resolve)."""
        request = rpb.BulkAcceptRequest(
            model=model,
            min_confidence=min_confidence,
            rule_id=rule_id,
            tier=dpb.Tier.Value(f"TIER_{tier or 'UNSPECIFIED'}"),
            limit=limit,
            dry_run=dry_run,
        )
        return self._stub.BulkAccept(request, metadata=self._metadata, timeout=self._timeout)

    def revert(self, escalation_id: str, reason: str) -> ReviewItem:
        """A lead takes back the item's resolution: the item, open again."""
        request = rpb.RevertRequest(escalation_id=escalation_id, reason=reason)
        response = self._stub.Revert(request, metadata=self._metadata, timeout=self._timeout)
        return item_from_message(response.item)
