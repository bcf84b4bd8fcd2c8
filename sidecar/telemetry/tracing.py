"""One SERVER span per Route, RouteBatch and RouteStream batch, continuing the
caller's trace from gRPC metadata (W3C traceparent by default).

Spans always get ids, which go into the audit record and the escalation; they are
exported over OTLP only when OTEL_* variables ask for it, by the standard exporter
running in a child process (``span_export``), so exporting never blocks or slows a
request.

The request path does not build the SDK's Span objects: under load, starting,
annotating and ending one cost a large share of the Route handler's CPU (measured:
see docs/performance.md#spans-on-the-request-path). A span here is a few slots, and
a finished one is handed to the exporter as the tuple the child rebuilds. What the
SDK reads from the environment still decides: the propagators (OTEL_PROPAGATORS),
the sampler (OTEL_TRACES_SAMPLER and its argument), the id generator, and
OTEL_SDK_DISABLED. What it does not offer is span processors, which the sidecar
never configured."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision

from sidecar.telemetry.metrics import otlp_requested
from sidecar.telemetry.span_export import FinishedSpan, SpanShipper

INSTRUMENTATION = "hitl.sidecar"
_SERVER = trace.SpanKind.SERVER
_SAMPLED = int(trace.TraceFlags.SAMPLED)
_DEFAULT_SAMPLER = (
    "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,"
    "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
    "localParentNotSampled:AlwaysOffSampler}"
)


class Shipper(Protocol):
    """Takes finished, sampled spans to an exporter (``span_export.SpanShipper``)."""

    def ship(self, span: FinishedSpan) -> None: ...

    def shutdown(self) -> None: ...


def sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def server_spans(resource: Resource) -> ServerSpans:
    """Spans exported over OTLP, from a child process, when OTEL_* variables ask for it."""
    export = otlp_requested("traces") and not sdk_disabled()
    return ServerSpans(SpanShipper(dict(resource.attributes)) if export else None)


class ServerSpan:
    """One RPC's span: ids at start, attributes and status as the call goes, shipped
    to the exporter when it ends (leaving its ``with`` block), if sampled and exported.
    An exception leaving the block marks it an error."""

    __slots__ = ("_error", "_ids", "_name", "_parent", "_ship", "_start", "attributes")

    def __init__(
        self,
        name: str,
        ids: tuple[int, int, int],  # trace id, span id, trace flags
        parent: trace.SpanContext | None,
        ship: Shipper | None,
    ) -> None:
        self._name = name
        self._ids = ids
        self._parent = parent
        self._ship = ship
        self._start = time.time_ns()
        self._error: str | None = None
        self.attributes: dict[str, Any] = {}

    def __enter__(self) -> ServerSpan:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        if kind is not None and self._error is None:
            self._error = f"{kind.__name__}: {exc}"
        self.end()

    def trace_ids(self) -> tuple[str, str]:
        """(trace_id, span_id) as lowercase hex, or empty strings with tracing disabled."""
        trace_id, span_id, _ = self._ids
        if not span_id:
            return "", ""
        return f"{trace_id:032x}", f"{span_id:016x}"

    def error(self, description: str) -> None:
        """Mark the span's status as an error."""
        self._error = description

    def end(self) -> None:
        if self._ship is None:
            return
        trace_id, span_id, flags = self._ids
        parent = self._parent
        self._ship.ship(
            FinishedSpan(
                self._name,
                trace_id,
                span_id,
                flags,
                parent.span_id if parent else 0,
                parent.is_remote if parent else False,
                _SERVER,
                self._start,
                time.time_ns(),
                self._error,
                self.attributes,
                INSTRUMENTATION,
            )
        )


class ServerSpans:
    """Starts the sidecar's server spans; ``shutdown`` flushes the exporter."""

    def __init__(self, shipper: Shipper | None) -> None:
        # Only for the sampler and id generator it builds from the environment.
        provider = TracerProvider(shutdown_on_exit=False)
        self._sampler = provider.sampler
        # The SDK's default sampler samples every trace the caller did not mark
        # unsampled; knowing that at start-up spares a SamplingResult per call.
        self._follows_parent = provider.sampler.get_description() == _DEFAULT_SAMPLER
        self._ids = provider.id_generator
        self._disabled = sdk_disabled()
        self._fields = frozenset(propagate.get_global_textmap().fields)
        self._shipper = None if self._disabled else shipper

    def start(self, name: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> ServerSpan:
        if self._disabled:
            return ServerSpan(name, (0, 0, 0), None, None)
        # The caller's context, as the configured propagators read it from the metadata;
        # most calls carry none of their headers, and then there is nothing to read.
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        context = Context() if self._fields.isdisjoint(carrier) else propagate.extract(carrier)
        parent: trace.SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
        else:
            parent, trace_id = None, self._ids.generate_trace_id()
        if self._follows_parent:
            sampled = parent is None or parent.trace_flags.sampled
        else:
            decision = self._sampler.should_sample(context, trace_id, name, _SERVER).decision
            sampled = decision is Decision.RECORD_AND_SAMPLE
        flags = _SAMPLED if sampled else 0
        ship = self._shipper if flags else None
        return ServerSpan(name, (trace_id, self._ids.generate_span_id(), flags), parent, ship)

    def shutdown(self) -> None:
        if self._shipper is not None:
            self._shipper.shutdown()
