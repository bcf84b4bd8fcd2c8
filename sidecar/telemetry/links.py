"""Span links: the span of a call about earlier work (feedback about a decision)
points at the spans of that work, so a trace viewer goes from one to the other."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace


def recording_span() -> bool:
    """Whether there is a current span that would keep links."""
    return trace.get_current_span().is_recording()


def link_current_span(spans: Iterable[tuple[str, str]]) -> None:
    """Link the current span to each (trace id, span id) given as W3C lowercase hex;
    ids that are empty or malformed are skipped. Without a recording span, nothing."""
    current = trace.get_current_span()
    if not current.is_recording():
        return
    for trace_id, span_id in spans:
        context = _context(trace_id, span_id)
        if context is not None:
            current.add_link(context)


def _context(trace_id: str, span_id: str) -> trace.SpanContext | None:
    if len(trace_id) != 32 or len(span_id) != 16:
        return None
    try:
        context = trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True)
    except ValueError:
        return None
    return context if context.is_valid else None
