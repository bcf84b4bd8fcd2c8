"""One span per Route, continuing the caller's W3C traceparent from gRPC metadata.

Spans are always recorded (their ids go into the audit record and escalation);
they are exported over OTLP only when OTEL_* variables ask for it, by the standard
exporter running in a child process (``span_export``), so exporting never blocks
or slows a request."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from sidecar.telemetry.metrics import otlp_requested
from sidecar.telemetry.span_export import ProcessSpanProcessor

INSTRUMENTATION = "hitl.sidecar"


def tracer_provider(resource: Resource, processors: Iterable[SpanProcessor] = ()) -> TracerProvider:
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    if otlp_requested("traces"):
        provider.add_span_processor(ProcessSpanProcessor(dict(resource.attributes)))
    return provider


def parent_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The caller's trace context from gRPC invocation metadata (traceparent, baggage)."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return propagate.extract(carrier)


def trace_ids(span: trace.Span) -> tuple[str, str]:
    """(trace_id, span_id) as lowercase hex, or empty strings for a non-recording span."""
    context = span.get_span_context()
    if not context.is_valid:
        return "", ""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
