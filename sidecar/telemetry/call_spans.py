"""Spans for a control-plane service's calls (the feedback service's): one SERVER
span per call, continuing the caller's trace from its gRPC metadata or HTTP headers
(W3C ``traceparent`` by default, as OTEL_PROPAGATORS says), exported over OTLP by
the SDK's batch processor when OTEL_* variables ask for it.

These are the SDK's own spans: a call here costs a database transaction, and the
span's tens of microseconds do not matter as they do on Route (``tracing``). With
no exporter and no processor given, the tracer is the API's no-op one and a span
costs nothing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from sidecar.telemetry.metrics import otlp_requested
from sidecar.telemetry.tracing import sdk_disabled


class CallSpans:
    """``processors`` receive every span besides the OTLP exporter's (tests give an
    in-memory one); ``attributes`` are set on every span (``rpc.service``)."""

    def __init__(
        self,
        resource: Resource,
        instrumentation: str,
        attributes: Mapping[str, str],
        processors: Iterable[SpanProcessor] = (),
    ) -> None:
        chosen = list(processors)
        if otlp_requested("traces") and not sdk_disabled():
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            chosen.append(BatchSpanProcessor(OTLPSpanExporter()))
        self._provider: TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()
        if chosen:
            self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            for processor in chosen:
                self._provider.add_span_processor(processor)
            self._tracer = self._provider.get_tracer(instrumentation)
        self._attributes = dict(attributes)

    @contextmanager
    def span(
        self, system: str, method: str, carrier: Iterable[tuple[str, str | bytes]]
    ) -> Iterator[None]:
        """A span named ``<service>/<method>`` around the block, current within it, a
        child of the trace the carrier's headers name (if any); system is the
        transport (``grpc``, ``connect_rpc``). An exception leaving the block is
        recorded on it and marks it an error."""
        if self._provider is None:  # nothing would see it
            yield
            return
        headers = {key.lower(): value for key, value in carrier if isinstance(value, str)}
        context = propagate.extract(headers)
        name = f"{self._attributes.get('rpc.service', '')}/{method}"
        attributes = {**self._attributes, "rpc.system": system, "rpc.method": method}
        with self._tracer.start_as_current_span(
            name, context=context, kind=trace.SpanKind.SERVER, attributes=attributes
        ):
            yield

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        if self._provider is not None:
            self._provider.shutdown()
