"""The feedback service sink: decisions (from escalation records, and from the
decision stream's sampled automated decisions) over RecordDecisions, outcomes over
RecordBatch (a decision with its model's labels: ``messages.with_labels``), as the
principal its credentials name (role sidecar), over TLS when a
CA is given. Both calls are idempotent (by request_id, by feedback_id). Any RPC
failure leaves the whole batch for a retry; records the service answers REJECTED
or CONFLICT are refused for good (a conflict is also logged as an error: another
decision holds the request id)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.errors import SinkUnavailable
from sidecar.escalation.messages import LabelsOf, decision_message, outcome_message, with_labels
from sidecar.escalation.sinks.base import YIELD_EVERY, Rejection, Sink, Spooled
from sidecar.serving import async_channel, bearer
from sidecar.settings import ClientCredentials

log = structlog.get_logger("hitl.forwarder")

REFUSED = (fpb.RecordResult.REJECTED, fpb.RecordResult.CONFLICT)


class FeedbackSink:
    name = "feedback"

    def __init__(
        self, target: str, timeout: float, credentials: ClientCredentials, labels_of: LabelsOf
    ) -> None:
        self.target = target
        self._labels_of = labels_of
        self._timeout = timeout
        self._channel = async_channel(target, credentials)
        self._stub = fpb_grpc.FeedbackStub(self._channel)
        self._metadata = bearer(credentials.token)

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]:
        decisions: list[tuple[Spooled, fpb.DecisionRecord]] = []
        outcomes: list[tuple[Spooled, fpb.FeedbackEvent]] = []
        unfit = []
        for count, item in enumerate(batch, 1):
            try:
                if item.record.get("kind") == "outcome":
                    outcomes.append((item, outcome_message(item.record)))
                else:
                    record = with_labels(item.record, self._labels_of)
                    decisions.append((item, decision_message(record)))
            except (KeyError, TypeError, ValueError) as exc:  # no message holds it
                unfit.append(Rejection(item.key, f"not a decision or an outcome: {exc!r}"))
            if count % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        refused = []
        with self._unavailable():
            if decisions:
                request = fpb.RecordDecisionsRequest(decisions=[m for _, m in decisions])
                answer = await self._stub.RecordDecisions(
                    request, metadata=self._metadata, timeout=self._timeout
                )
                refused += self._refused([item for item, _ in decisions], answer.results)
            if outcomes:
                events = fpb.RecordBatchRequest(events=[m for _, m in outcomes])
                answered = await self._stub.RecordBatch(
                    events, metadata=self._metadata, timeout=self._timeout
                )
                refused += self._refused([item for item, _ in outcomes], answered.results)
        return unfit + refused

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Any RPC failure as SinkUnavailable: the forwarder retries the batch."""
        try:
            yield
        except grpc.aio.AioRpcError as exc:
            raise SinkUnavailable(
                f"feedback service {self.target}: {exc.code().name}: {exc.details()}"
            ) from exc

    def _refused(self, items: list[Spooled], results: Sequence[Any]) -> list[Rejection]:
        """The items whose result (in order, one each) is REJECTED or CONFLICT."""
        refused = []
        for item, result in zip(items, results, strict=True):
            if result.status == fpb.RecordResult.CONFLICT:
                log.error(
                    "forwarder.conflicting_record",
                    key=item.key,
                    sink=self.name,
                    error=result.message,
                )
            if result.status in REFUSED:
                refused.append(Rejection(item.key, result.message))
        return refused

    async def close(self) -> None:
        await self._channel.close(None)


class TeeSink:
    """Every batch to each of sinks in turn (the review queue, then the feedback
    service): delivered once all have it, so a sink that is down holds the batch for
    a retry while the others dedupe what they already have. A record any sink
    refuses is dead-lettered with every refusal's reason."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks
        self.name = "+".join(sink.name for sink in sinks)

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]:
        reasons: dict[str, list[str]] = {}
        for sink in self.sinks:
            for rejection in await sink.deliver(batch):
                reasons.setdefault(rejection.key, []).append(f"{sink.name}: {rejection.reason}")
        return [Rejection(key, "; ".join(why)) for key, why in reasons.items()]

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()
