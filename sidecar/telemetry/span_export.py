"""Span export in a child process.

The standard OTLP exporter encodes spans in Python. Run in the sidecar's process,
each BatchSpanProcessor export of a few hundred spans held the interpreter long
enough to multiply Route's p99 under load (measured: see
docs/performance.md#span-export-in-a-child-process). So a finished span is a small
tuple; a background thread ships them in batches over a pipe, and a child process
rebuilds them as ReadableSpans and hands them to the standard OTLPSpanExporter,
configured by the same OTEL_* variables. The request path never encodes or sends.

The child runs under the idle scheduling class (SCHED_IDLE, which any process may
choose for itself): its bursts of encoding, a few times a second, take a core only
when nothing else wants it, and a Route call waking up takes the core back at once.
Under the Route benchmark's load the child keeps up; at nice 10 the scheduler let
its bursts delay the event loop, and Route's p99 was higher than under SCHED_IDLE
(measured: the same section). With the cores saturated the child falls behind, and
spans past MAX_QUEUE are dropped and counted: the answer comes before its trace.
Where the class is refused, the child runs at nice EXPORTER_NICENESS instead.

Bounded like BatchSpanProcessor: when the child falls behind, new spans are dropped
and counted, never queued without limit, and a dead child never blocks a request."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import threading
from collections import deque
from typing import Any, NamedTuple

import structlog
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = structlog.get_logger("hitl.telemetry")

MAX_QUEUE = 8192
EXPORTER_NICENESS = 10
SHIP_SECONDS = 0.2
CHILD_EXIT_SECONDS = 10.0  # on shutdown, for the child to export what it holds


class FinishedSpan(NamedTuple):
    """What the child needs to rebuild a span for the exporter."""

    name: str
    trace_id: int
    span_id: int
    trace_flags: int
    parent_span_id: int  # 0: a root span
    parent_is_remote: bool
    kind: SpanKind
    start_ns: int
    end_ns: int
    error: str | None  # the status description when the call failed
    attributes: dict[str, Any]
    scope: str


def _rebuild(span: FinishedSpan, resource: Resource) -> ReadableSpan:
    flags = TraceFlags(span.trace_flags)
    parent = (
        SpanContext(span.trace_id, span.parent_span_id, span.parent_is_remote, flags)
        if span.parent_span_id
        else None
    )
    return ReadableSpan(
        span.name,
        context=SpanContext(span.trace_id, span.span_id, is_remote=False, trace_flags=flags),
        parent=parent,
        resource=resource,
        attributes=span.attributes,
        kind=span.kind,
        status=Status(StatusCode.UNSET)
        if span.error is None
        else Status(StatusCode.ERROR, span.error),
        start_time=span.start_ns,
        end_time=span.end_ns,
        instrumentation_scope=InstrumentationScope(span.scope),
    )


class SpanShipper:
    """Ships finished spans to an exporter child process."""

    def __init__(self, resource_attributes: dict[str, Any]) -> None:
        context = mp.get_context("spawn")
        receive, self._send = context.Pipe(duplex=False)
        self._child = context.Process(
            target=_child_main,
            args=(receive, resource_attributes),
            name="hitl-span-exporter",
            daemon=True,
        )
        self._child.start()
        receive.close()
        self._queue: deque[FinishedSpan] = deque()
        self.dropped = 0
        self._reported = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._ship_loop, name="hitl-span-shipper", daemon=True
        )
        self._thread.start()

    def ship(self, span: FinishedSpan) -> None:
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.append(span)

    def _ship_loop(self) -> None:
        """The only thread that sends on the pipe."""
        while not self._stopping:
            self._wake.wait(SHIP_SECONDS)
            self._wake.clear()
            self._ship()
        self._ship()

    def _ship(self) -> None:
        if self.dropped > self._reported:
            log.warning("spans.dropped", count=self.dropped - self._reported, reason="queue full")
            self._reported = self.dropped
        batch = [self._queue.popleft() for _ in range(len(self._queue))]
        if not batch:
            return
        try:
            self._send.send(batch)
        except (OSError, ValueError) as exc:  # the child is gone: drop, never block
            self.dropped += len(batch)
            self._reported = self.dropped
            log.warning("spans.dropped", count=len(batch), reason=str(exc))

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # else it is stuck on a full pipe: do not join it
            with contextlib.suppress(OSError, ValueError):
                self._send.send(None)
        self._send.close()
        self._child.join(timeout=CHILD_EXIT_SECONDS)
        if self._child.is_alive():
            log.warning("spans.exporter_killed", waited_seconds=CHILD_EXIT_SECONDS)
            self._child.kill()
            self._child.join(timeout=5)  # reaped, not left a zombie


def lower_priority() -> None:
    """Put the calling process under SCHED_IDLE, or at nice EXPORTER_NICENESS where
    that is refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:
        log.warning("spans.exporter_priority", policy="nice", reason=str(exc))
        os.nice(EXPORTER_NICENESS)


def _child_main(
    receive: multiprocessing.connection.Connection, resource_attributes: dict[str, Any]
) -> None:
    lower_priority()  # before the exporter starts threads, so they inherit it
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter()
    resource = Resource(resource_attributes)
    while True:
        try:
            batch = receive.recv()
        except EOFError:
            break
        if batch is None:
            break
        exporter.export([_rebuild(span, resource) for span in batch])
    exporter.shutdown()
