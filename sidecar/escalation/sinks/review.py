"""The review queue sink: escalations to ``hitl review`` over gRPC Submit, which is
idempotent by escalation_id, as the principal its credentials name (role sidecar),
over TLS when a CA is given. Each escalation goes with its model's class labels,
looked up as it is sent (``messages.with_labels``, as the feedback sink does), so
the reviewer sees class names and Route never pays for them. Any RPC failure leaves
the whole batch for a retry; items the queue answers REJECTED are refused for good,
and so are those it answers CONFLICT (their id is held with other content), which
are also logged as errors: a forged or corrupted escalation took the id first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.errors import SinkUnavailable
from sidecar.escalation.messages import LabelsOf, record_message, with_labels
from sidecar.escalation.sinks.base import YIELD_EVERY, Rejection, Spooled
from sidecar.serving import async_channel, bearer
from sidecar.settings import ClientCredentials

log = structlog.get_logger("hitl.forwarder")


def no_labels(model: str, revision: int) -> tuple[str, ...]:
    """A sink given no lookup sends escalations without labels."""
    return ()


class ReviewQueueSink:
    name = "review-queue"

    def __init__(
        self,
        target: str,
        timeout: float,
        credentials: ClientCredentials,
        labels_of: LabelsOf | None = None,
    ) -> None:
        self.target = target
        self._labels_of = labels_of or no_labels
        self._timeout = timeout
        self._channel = async_channel(target, credentials)
        self._stub = rpb_grpc.ReviewQueueStub(self._channel)
        self._metadata = bearer(credentials.token)

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]:
        # Built a few at a time, like the forwarder decodes: the event loop is Route's.
        messages, unfit = [], []
        for count, item in enumerate(batch, 1):
            try:
                messages.append(record_message(with_labels(item.record, self._labels_of)))
            except (KeyError, TypeError, ValueError) as exc:  # no message holds it
                unfit.append(Rejection(item.key, f"not an escalation message: {exc!r}"))
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        request = rpb.SubmitRequest(escalations=messages)
        try:
            response = await self._stub.Submit(
                request, metadata=self._metadata, timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise SinkUnavailable(
                f"review queue {self.target}: {exc.code().name}: {exc.details()}"
            ) from exc
        refused = []
        for result in response.results:
            if result.status == rpb.SubmitResult.CONFLICT:
                log.error(
                    "forwarder.conflicting_escalation",
                    escalation_id=result.escalation_id,
                    sink=self.name,
                    error=result.message,
                )
            if result.status in (rpb.SubmitResult.REJECTED, rpb.SubmitResult.CONFLICT):
                refused.append(Rejection(result.escalation_id, result.message))
        return unfit + refused

    async def close(self) -> None:
        await self._channel.close(None)
