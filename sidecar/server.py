"""The Router servicer: proto in, core types to the Router, proto out. Nothing else;
errors become status codes through ``sidecar.serving.status_of``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from itertools import accumulate, chain
from typing import Any, TypeVar

import grpc
import numpy as np
import structlog
from google.protobuf.message import DecodeError

from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc
from sidecar.core.decision import is_degraded
from sidecar.core.request import FloatArray, RouteInput
from sidecar.core.validation import check_batch_size
from sidecar.errors import (
    HitlError,
    InvalidRequest,
)
from sidecar.router import BatchRouted, Outcome, Routed, Router, TraceIds
from sidecar.serving import Unreadable, details, reader, status_of
from sidecar.telemetry.metrics import RouterMetrics
from sidecar.telemetry.tracing import ServerSpan, ServerSpans

log = structlog.get_logger("hitl.server")

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
_METHOD = {name: {"method": name} for name in ("Route", "RouteBatch", "RouteStream")}


class RouterServicer(pb_grpc.RouterServicer):
    def __init__(self, router: Router, metrics: RouterMetrics | None, spans: ServerSpans) -> None:
        self._router = router
        self._metrics = metrics
        self._spans = spans

    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        start = time.perf_counter()
        failure: HitlError | None = None
        with self._spans.start("hitl.Route", context.invocation_metadata()) as span:
            try:
                routed = await self._router.route(to_input(request), TraceIds(*span.trace_ids()))
            except HitlError as exc:
                failure = exc
                span.error(str(exc))
            else:
                _annotate(span, request.model, routed)
        self._observe(start, "Route")
        if failure is not None:
            await context.abort(status_of(failure), details(str(failure)))
        return to_response(routed)

    async def RouteBatch(
        self, request: pb.RouteBatchRequest | Frames, context: Context
    ) -> pb.RouteBatchResponse:
        start = time.perf_counter()
        try:
            check_batch_size(_size(request))
        except InvalidRequest as exc:
            await context.abort(status_of(exc), details(str(exc)))
        response = await self._answer(request, context, "hitl.RouteBatch")
        self._observe(start, "RouteBatch")
        return response

    async def RouteStream(
        self,
        request_iterator: AsyncIterator[pb.RouteBatchRequest | Frames | Unreadable],
        context: Context,
    ) -> AsyncIterator[pb.RouteBatchResponse]:
        """Every inbound batch gets one outbound batch: an empty, oversized or
        unreadable one gets a single error result, and the stream stays open."""
        async for batch in request_iterator:
            start = time.perf_counter()
            try:
                if isinstance(batch, Unreadable):
                    raise InvalidRequest("requests", batch.message("batch"))
                check_batch_size(_size(batch))
            except InvalidRequest as exc:
                yield pb.RouteBatchResponse(results=[_error("", exc)])
                continue
            yield await self._answer(batch, context, "hitl.RouteStream")
            self._observe(start, "RouteStream")

    async def RecordOutcome(
        self, request: pb.OutcomeRequest, context: Context
    ) -> pb.OutcomeResponse:
        outcome = Outcome(
            request_id=request.request_id,
            model=request.model,
            true_class=request.true_class if request.HasField("true_class") else None,
            true_label=request.true_label,
            source=request.source,
        )
        try:
            match = await self._router.record_outcome(outcome)
        except HitlError as exc:
            await context.abort(status_of(exc), details(str(exc)))
        return pb.OutcomeResponse(matched=match.matched, correct=match.correct)

    # -- helpers ----------------------------------------------------------------------

    async def _answer(
        self, batch: pb.RouteBatchRequest | Frames, context: Context, name: str
    ) -> pb.RouteBatchResponse:
        """A batch's answer; requests protobuf could not read fail alone, in place."""
        if isinstance(batch, pb.RouteBatchRequest):
            return await self._batch(batch.requests, context, name)
        readable = [item for item in batch if not isinstance(item, Unreadable)]
        answered = await self._batch(readable, context, name) if readable else None
        results = iter(answered.results if answered else ())
        return pb.RouteBatchResponse(
            results=[
                _error("", InvalidRequest(f"requests[{i}]", item.message("request")))
                if isinstance(item, Unreadable)
                else next(results)
                for i, item in enumerate(batch)
            ]
        )

    async def _batch(
        self, requests: Sequence[pb.RouteRequest], context: Context, name: str
    ) -> pb.RouteBatchResponse:
        with self._spans.start(name, context.invocation_metadata()) as span:
            span.attributes["hitl.batch_size"] = len(requests)
            inputs, finite = to_inputs(requests)
            routed = await self._router.route_batch(inputs, TraceIds(*span.trace_ids()), finite)
            return to_batch_response(routed)

    def _observe(self, start: float, method: str) -> None:
        if self._metrics is not None:
            self._metrics.latency.record((time.perf_counter() - start) * 1000.0, _METHOD[method])


def to_input(message: pb.RouteRequest, logits: FloatArray | None = None) -> RouteInput:
    """The request, with its logits read from the message unless given (a batch's
    views of one array)."""
    if logits is None:
        logits = np.fromiter(message.logits, dtype=np.float32, count=len(message.logits))
    return RouteInput(
        request_id=message.request_id,
        model=message.model,
        logits=logits,
        model_version=message.model_version,
        input_kind=message.input_kind,
        domain=message.domain,
        string_attributes=_as_dict(message.string_attributes),
        numeric_attributes=_as_dict(message.numeric_attributes),
        input_ref=message.input_ref,
        context=_as_dict(message.context),
    )


# A batch read request by request because the whole could not be parsed.
Frames = list[pb.RouteRequest | Unreadable]
_read_request = reader(pb.RouteRequest.FromString)


def read_batch(raw: bytes) -> pb.RouteBatchRequest | Frames | Unreadable:
    """A RouteBatchRequest; where protobuf cannot parse it whole, its requests one by
    one (RouteBatchFrames), so each unreadable one fails alone."""
    try:
        return pb.RouteBatchRequest.FromString(raw)
    except DecodeError:
        pass
    try:
        frames = pb.RouteBatchFrames.FromString(raw)
    except DecodeError as exc:
        return Unreadable("hitl.v1.RouteBatchRequest", str(exc) or "cannot be parsed")
    return [_read_request(frame) for frame in frames.requests]


def _size(batch: pb.RouteBatchRequest | Frames) -> int:
    return len(batch.requests) if isinstance(batch, pb.RouteBatchRequest) else len(batch)


def _error(request_id: str, error: HitlError) -> pb.RouteResult:
    code = status_of(error).value[0]
    return pb.RouteResult(
        error=pb.RouteError(request_id=request_id, code=code, message=details(str(error)))
    )


def to_inputs(messages: Sequence[pb.RouteRequest]) -> tuple[list[RouteInput], list[bool]]:
    """A batch's requests, their logits views of one array read in one pass, and
    whether each one's logits are all finite (checked at once)."""
    sizes = [len(m.logits) for m in messages]
    flat = np.fromiter(
        chain.from_iterable(m.logits for m in messages), dtype=np.float32, count=sum(sizes)
    )
    ends = list(accumulate(sizes))
    starts = [0, *ends[:-1]]
    finite = [True] * len(messages)
    if not np.isfinite(flat).all():
        finite = [bool(np.isfinite(flat[a:b]).all()) for a, b in zip(starts, ends, strict=True)]
    inputs = [to_input(m, flat[a:b]) for m, a, b in zip(messages, starts, ends, strict=True)]
    return inputs, finite


def _as_dict(entries: Mapping[str, T]) -> dict[str, T] | None:
    """A protobuf map as a dict (None when empty), copied once: the core, the audit
    record and the escalation each read it, and a dict reads far faster. A
    comprehension, because dict() of a protobuf map goes through the Python
    iterator of collections.abc's KeysView (twice as slow)."""
    return {key: entries[key] for key in entries} if entries else None


def to_response(routed: Routed) -> pb.RouteResponse:
    d = routed.decision
    return pb.RouteResponse(
        request_id=routed.request_id,
        tier=int(d.tier),  # type: ignore[arg-type]
        predicted_class=d.predicted_class,
        predicted_label=d.predicted_label,
        calibrated_confidence=d.calibrated_confidence,
        reason=int(d.reason),  # type: ignore[arg-type]
        rule_id=d.rule_id,
        policy_revision=d.policy_revision,
        calibration_version=d.calibration_version,
        experiment_arm=d.experiment_arm,
        degraded=d.degraded,
        escalation_id=routed.escalation_id,
        t_high=d.t_high,
        t_low=d.t_low,
    )


def to_batch_response(routed: BatchRouted) -> pb.RouteBatchResponse:
    """Each row's response or error; built from plain values (a message from dicts
    in one constructor, rather than a message per row copied into its parent)."""
    results: list[dict[str, Any]] = []
    errors = routed.errors
    for i, (request_id, row, esc_id) in enumerate(
        zip(routed.request_ids, routed.decisions, routed.escalation_ids, strict=True)
    ):
        if row is None or i in errors:
            error = errors[i]
            code = status_of(error).value[0]
            message = details(str(error))
            results.append({"error": {"request_id": request_id, "code": code, "message": message}})
            continue
        (tier, reason, cls, label, confidence, _, _, rule_id, t_high, t_low, arm, revision,
         version) = row  # fmt: skip
        results.append(
            {"response": {
                "request_id": request_id, "tier": tier, "predicted_class": cls,
                "predicted_label": label, "calibrated_confidence": confidence, "reason": reason,
                "rule_id": rule_id, "policy_revision": revision, "calibration_version": version,
                "experiment_arm": arm, "degraded": is_degraded(reason), "escalation_id": esc_id,
                "t_high": t_high, "t_low": t_low,
            }}
        )  # fmt: skip
    return pb.RouteBatchResponse(results=results)  # type: ignore[arg-type]  # upb takes dicts


def _annotate(span: ServerSpan, model: str, routed: Routed) -> None:
    d = routed.decision
    span.attributes.update(
        {
            "hitl.model": model,
            "hitl.tier": d.tier.name,
            "hitl.reason": d.reason.name,
            "hitl.policy_revision": d.policy_revision,
            "hitl.calibration_version": d.calibration_version,
            "hitl.degraded": d.degraded,
        }
    )
