"""A blocking client of the feedback service, for tools, the CLI and tests.

One channel for the client's lifetime; a deadline on every call; the caller's
credentials (a bearer token, and over TLS the service's CA plus, for mTLS, a client
certificate) go with every call, and the service records events under the principal
they name. Errors are grpc.RpcError with the server's status code and a message
naming the field.

    with FeedbackClient("127.0.0.1:7435", token) as client:
        client.record(outcome_event("fb-1", "req-1", "digits", true_class=7))
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.errors import DataError
from sidecar.feedback.dataset import Dataset
from sidecar.serving import ServiceClient

DEFAULT_TIMEOUT = 5.0
EXPORT_TIMEOUT = 600.0


class FeedbackClient(ServiceClient):
    default_timeout = DEFAULT_TIMEOUT
    service = "hitl.v1.Feedback"

    @functools.cached_property
    def _stub(self) -> fpb_grpc.FeedbackStub:
        return fpb_grpc.FeedbackStub(self._channel)

    def record(self, event: fpb.FeedbackEvent) -> fpb.RecordResult:
        result: fpb.RecordResult = self._stub.Record(
            event, metadata=self._metadata, timeout=self._timeout
        )
        return result

    def record_batch(self, events: Sequence[fpb.FeedbackEvent]) -> list[fpb.RecordResult]:
        request = fpb.RecordBatchRequest(events=events)
        response = self._stub.RecordBatch(request, metadata=self._metadata, timeout=self._timeout)
        return list(response.results)

    def record_decisions(self, decisions: Sequence[fpb.DecisionRecord]) -> list[fpb.DecisionResult]:
        request = fpb.RecordDecisionsRequest(decisions=decisions)
        response = self._stub.RecordDecisions(
            request, metadata=self._metadata, timeout=self._timeout
        )
        return list(response.results)

    def get(self, request_id: str) -> fpb.RequestHistory:
        history: fpb.RequestHistory = self._stub.Get(
            fpb.GetRequest(request_id=request_id), metadata=self._metadata, timeout=self._timeout
        )
        return history

    def labels(
        self, request_ids: Sequence[str], label_sources: Sequence[str] = ()
    ) -> list[fpb.RequestLabel]:
        """The label that stands for each of request_ids that has one (Labels)."""
        request = fpb.LabelsRequest(request_ids=request_ids, label_sources=label_sources)
        response = self._stub.Labels(request, metadata=self._metadata, timeout=self._timeout)
        return list(response.labels)

    def export(self, request: fpb.ExportDatasetRequest) -> Dataset:
        """The dataset the service compiles for the query; DataError when the rows
        received are not the ones its manifest names."""
        chunks = self._stub.Export(request, metadata=self._metadata, timeout=EXPORT_TIMEOUT)
        manifest: dict[str, object] = {}
        rows = bytearray()
        for chunk in chunks:
            if chunk.HasField("manifest_json"):
                manifest = json.loads(chunk.manifest_json)
            else:
                rows += chunk.rows
        if hashlib.sha256(rows).hexdigest() != manifest.get("sha256"):
            raise DataError("Export", "the rows received do not match the manifest's sha256")
        return Dataset(str(manifest["id"]), bytes(rows), manifest)


def outcome_event(
    feedback_id: str, request_id: str, model: str, *, true_class: int, label: str = ""
) -> fpb.FeedbackEvent:
    """An OUTCOME event: what request_id's prediction turned out to be."""
    return fpb.FeedbackEvent(
        feedback_id=feedback_id,
        request_id=request_id,
        model=model,
        type=fpb.FEEDBACK_OUTCOME,
        label=fpb.Label(class_index=true_class, name=label),
    )
