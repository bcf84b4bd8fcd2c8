"""Server spans: the caller's trace continued, the configured sampler obeyed, and what
is shipped to the exporter child rebuilt as the span the OTLP exporter sends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.telemetry.span_export import EXPORTER_NICENESS, FinishedSpan, _rebuild
from sidecar.telemetry.tracing import INSTRUMENTATION, ServerSpans

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Shipped:
    def __init__(self) -> None:
        self.spans: list[FinishedSpan] = []

    def ship(self, span: FinishedSpan) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        pass


def traceparent(flags: str = "01") -> list[tuple[str, str | bytes]]:
    return [("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"), ("bin", b"\x00")]


def test_continues_the_callers_trace() -> None:
    shipped = Shipped()
    with ServerSpans(shipped).start("hitl.Route", traceparent()) as span:
        span.attributes["hitl.tier"] = "AUTOMATED"
        trace_id, span_id = span.trace_ids()
    (finished,) = shipped.spans
    assert trace_id == CALLER_TRACE
    assert span_id == f"{finished.span_id:016x}" != CALLER_SPAN
    readable = _rebuild(finished, Resource({"service.name": "s"}))
    assert readable.name == "hitl.Route"
    assert readable.kind is SpanKind.SERVER
    assert readable.parent is not None
    assert readable.parent.is_remote
    assert f"{readable.parent.span_id:016x}" == CALLER_SPAN
    assert readable.context is not None
    assert readable.context.trace_flags.sampled
    assert readable.attributes == {"hitl.tier": "AUTOMATED"}
    assert readable.status.status_code is StatusCode.UNSET
    assert readable.instrumentation_scope is not None
    assert readable.instrumentation_scope.name == INSTRUMENTATION
    assert readable.start_time is not None
    assert readable.end_time is not None
    assert readable.start_time <= readable.end_time


def test_a_root_span_without_a_caller() -> None:
    shipped = Shipped()
    spans = ServerSpans(shipped)
    with spans.start("hitl.Route", None) as first, spans.start("hitl.Route", []) as second:
        ids = first.trace_ids(), second.trace_ids()
    assert [len(i) for pair in ids for i in pair] == [32, 16, 32, 16]
    assert ids[0][0] != ids[1][0]
    assert [s.parent_span_id for s in shipped.spans] == [0, 0]
    assert _rebuild(shipped.spans[0], Resource({})).parent is None


def test_an_exception_marks_the_span_an_error() -> None:
    shipped = Shipped()
    spans = ServerSpans(shipped)
    with pytest.raises(RuntimeError), spans.start("hitl.Route", None):
        raise RuntimeError("boom")
    with spans.start("hitl.Route", None) as span:
        span.error("logits: holds NaN or infinity")
    status = [_rebuild(s, Resource({})).status for s in shipped.spans]
    assert [s.status_code for s in status] == [StatusCode.ERROR, StatusCode.ERROR]
    assert [s.description for s in status] == [
        "RuntimeError: boom",
        "logits: holds NaN or infinity",
    ]


def test_the_parents_sampling_decision_is_kept() -> None:
    """The default sampler (parentbased_always_on) follows the caller's sampled flag;
    an unsampled span still has ids for the audit record."""
    shipped = Shipped()
    with ServerSpans(shipped).start("hitl.Route", traceparent("00")) as span:
        assert span.trace_ids()[0] == CALLER_TRACE
    assert shipped.spans == []


def test_the_configured_sampler_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    shipped = Shipped()
    with ServerSpans(shipped).start("hitl.Route", None) as span:
        assert all(span.trace_ids())
    assert shipped.spans == []


def test_sdk_disabled_means_no_ids_and_nothing_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    shipped = Shipped()
    with ServerSpans(shipped).start("hitl.Route", traceparent()) as span:
        assert span.trace_ids() == ("", "")
    assert shipped.spans == []


def test_where_the_idle_class_is_refused_the_exporter_runs_niced() -> None:
    """A process the kernel (or a seccomp profile) refuses SCHED_IDLE lowers its nice
    value instead; run in a process of its own, since both last for its lifetime."""
    refused = (
        "import os\n"
        "from sidecar.telemetry import span_export\n"
        "def refuse(*args):\n"
        "    raise PermissionError(1, 'Operation not permitted')\n"
        "os.sched_setscheduler = refuse\n"
        "before = os.nice(0)\n"
        "span_export.lower_priority()\n"
        "print(os.nice(0) - before, os.sched_getscheduler(0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", refused], capture_output=True, text=True, check=True
    )
    raised, policy = done.stdout.split()[-2:]
    assert (int(raised), int(policy)) == (EXPORTER_NICENESS, os.SCHED_OTHER)
    assert "spans.exporter_priority" in done.stdout
