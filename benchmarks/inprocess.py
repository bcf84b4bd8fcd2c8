"""The sidecar's request handlers in one process, without a network: what the
instruction gate counts (``benchmarks.instructions``) and what a profiler can read.

The rig is the real thing wired as ``sidecar.app.build`` wires it: the benchmark's
policy and ONNX calibrator, the Router and its servicer, the audit log writing to a
file (flushed every FLUSH_EVERY calls, as the sidecar's worker thread would), the
decision stream for a feedback service at the default sample, the spools (fsync off: an fsync is the kernel's time and the event loop's wakeup, which
the CPU-ratio gate measures, not instructions of ours), the metrics and the span
machinery. Each call is a servicer coroutine driven to completion by hand, with
the message parsed from its wire bytes before and the answer serialised after, as
gRPC does around a handler. No event loop, no threads, no sockets: what remains is
deterministic, so callgrind counts it the same way every run.

Scenarios (``SCENARIOS``): unary calls not escalated, escalated, and the
benchmark's mix; RouteBatch of 100 and of 1000 (counted per prediction)."""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.clock import FakeClock
from sidecar.escalation.decisions import DEFAULT_SAMPLE, DecisionStream
from sidecar.escalation.recorder import SpoolRecorder
from sidecar.escalation.spool import Spool
from sidecar.policy.loader import build_snapshot, parse_policy_bytes
from sidecar.policy.snapshot import SnapshotHolder
from sidecar.router import Router
from sidecar.server import RouterServicer
from sidecar.telemetry.audit import JsonLinesAudit
from sidecar.telemetry.metrics import RouterMetrics
from sidecar.telemetry.span_export import FinishedSpan
from sidecar.telemetry.tracing import INSTRUMENTATION, ServerSpans

FLUSH_EVERY = 50  # calls between audit flushes: 0.1 s at the benchmark's 500/s
CLOCK_STEP = 0.002  # seconds the fake clock moves per call


class KeptSpans:
    """The span shipper's request-path half (a bounded append); nothing is sent."""

    def __init__(self, keep: int = 8192) -> None:
        self.spans: list[FinishedSpan] = []
        self._keep = keep

    def ship(self, span: FinishedSpan) -> None:
        if len(self.spans) >= self._keep:
            self.spans.clear()
        self.spans.append(span)

    def shutdown(self) -> None:
        self.spans.clear()


class Context:
    """What a servicer reads of grpc.aio's context on the success path."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"the rig's request failed: {code} {details}")


@dataclass
class Rig:
    servicer: RouterServicer
    audit: JsonLinesAudit
    recorder: SpoolRecorder
    clock: FakeClock
    calls: int = 0

    def route(self, wire: bytes) -> bytes:
        """One unary Route, from the request's bytes to the response's."""
        request = pb.RouteRequest.FromString(wire)
        response: pb.RouteResponse = _complete(self.servicer.Route(request, Context()))  # type: ignore[arg-type]
        self._tick(1)
        return response.SerializeToString()

    def route_batch(self, wire: bytes, size: int) -> bytes:
        request = pb.RouteBatchRequest.FromString(wire)
        response: pb.RouteBatchResponse = _complete(
            self.servicer.RouteBatch(request, Context())  # type: ignore[arg-type]
        )
        self._tick(size)
        return response.SerializeToString()

    def _tick(self, decisions: int) -> None:
        self.clock.advance(CLOCK_STEP)
        before, self.calls = self.calls, self.calls + decisions
        if before // FLUSH_EVERY != self.calls // FLUSH_EVERY:
            self.audit.flush()

    def close(self) -> None:
        self.recorder.close()
        self.audit.close()


def _complete(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (nothing here waits) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a handler suspended; the rig runs only handlers that do not wait")


def build_rig(policy_file: Path, workdir: Path) -> Rig:
    """The servicer over the policy at policy_file (its calibrator beside it)."""
    clock = FakeClock(float(int(time.time())))  # the policy is issued now
    holder = SnapshotHolder()
    policy = parse_policy_bytes(policy_file.read_bytes(), str(policy_file))
    holder.swap(build_snapshot(policy, policy_file.parent, str(policy_file)))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    metrics = RouterMetrics(meters.get_meter(INSTRUMENTATION), holder, clock.now)
    recorder = SpoolRecorder(Spool(workdir / "spool", fsync=False))
    audit = JsonLinesAudit(str(workdir / "audit.jsonl"))
    # The decision stream on, as with a feedback service: a sample of the automated
    # decisions recorded at the sidecar's default rate.
    decisions = DecisionStream(
        SpoolRecorder(Spool(workdir / "decisions", fsync=False)), DEFAULT_SAMPLE
    )
    router = Router(holder, recorder, audit, metrics, clock, decisions=decisions)
    return Rig(RouterServicer(router, metrics, ServerSpans(KeptSpans())), audit, recorder, clock)


@dataclass(frozen=True)
class Scenario:
    """A measured loop: ``calls`` handler calls of ``batch`` predictions each."""

    name: str
    description: str
    batch: int
    calls: int
    pick: Callable[[bool], bool]  # which of the mix's requests, by whether it escalates


SCENARIOS = (
    Scenario("unary_automated", "Route, not escalated", 1, 400, lambda escalated: not escalated),
    Scenario("unary_escalated", "Route, escalated", 1, 400, lambda escalated: escalated),
    Scenario("unary_mix", "Route, the benchmark's mix", 1, 600, lambda _escalated: True),
    Scenario("batch_100", "RouteBatch of 100, per prediction", 100, 8, lambda _e: True),
    Scenario("batch_1000", "RouteBatch of 1000, per prediction", 1000, 2, lambda _e: True),
)
SLOWED = "+slowdown"  # the suffix of a scenario counted again with a slowdown
WARM_CALLS = 200  # unary calls before anything is measured


def requests_for(
    scenario: Scenario, payloads: Sequence[bytes], escalates: Sequence[bool], tag: str
) -> list[bytes]:
    """The wire bytes of each call of a scenario, each request with a fresh id."""
    chosen = [p for p, e in zip(payloads, escalates, strict=True) if scenario.pick(e)]
    needed = scenario.calls * scenario.batch
    messages = []
    for i in range(needed):
        message = pb.RouteRequest.FromString(chosen[i % len(chosen)])
        message.request_id = f"{tag}-{i}"
        messages.append(message)
    if scenario.batch == 1:
        return [m.SerializeToString() for m in messages]
    return [
        pb.RouteBatchRequest(requests=messages[i : i + scenario.batch]).SerializeToString()
        for i in range(0, needed, scenario.batch)
    ]


def run(
    policy_file: Path,
    payloads: Sequence[bytes],
    marks: tuple[Callable[[], object], Callable[[], object]],
    only: Sequence[str] = (),
    slowdown: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Every scenario (or those named in only), each measured between marks[0]() and
    marks[1](); returns the predictions each measured loop routed, by name.

    With slowdown, the scenarios then run a second time, named ``<name>+slowdown``,
    with slowdown called inside every unary decision: the gate's test of itself."""
    chosen = [s for s in SCENARIOS if not only or s.name in only]
    with tempfile.TemporaryDirectory(prefix="hitl-rig-") as directory:
        rig = build_rig(policy_file, Path(directory))
        escalates = _escalates(rig, payloads)
        for wire in requests_for(SCENARIOS[2], payloads, escalates, "warm")[:WARM_CALLS]:
            rig.route(wire)
        gc.collect()
        gc.freeze()
        routed = _measure(rig, chosen, "", payloads, escalates, marks)
        if slowdown is not None:
            _slow_down(rig, slowdown)
            routed |= _measure(rig, chosen, SLOWED, payloads, escalates, marks)
        rig.close()
    return routed


def _measure(
    rig: Rig,
    scenarios: Sequence[Scenario],
    suffix: str,
    payloads: Sequence[bytes],
    escalates: Sequence[bool],
    marks: tuple[Callable[[], object], Callable[[], object]],
) -> dict[str, int]:
    routed = {}
    start, stop = marks
    for scenario in scenarios:
        name = scenario.name + suffix
        calls = requests_for(scenario, payloads, escalates, name)
        start()
        for wire in calls:
            if scenario.batch == 1:
                rig.route(wire)
            else:
                rig.route_batch(wire, scenario.batch)
        stop()
        routed[name] = scenario.calls * scenario.batch
    return routed


def _escalates(rig: Rig, payloads: Sequence[bytes]) -> list[bool]:
    """Whether each request of the mix is escalated (routed once, under a probe id)."""
    flags = []
    for i, payload in enumerate(payloads):
        message = pb.RouteRequest.FromString(payload)
        message.request_id = f"probe-{i}"
        response = pb.RouteResponse.FromString(rig.route(message.SerializeToString()))
        flags.append(bool(response.escalation_id))
    return flags


def _slow_down(rig: Rig, extra: Callable[[], None]) -> None:
    route = rig.servicer._router.route

    def slower(*args: Any, **kwargs: Any) -> Any:
        extra()
        return route(*args, **kwargs)

    rig.servicer._router.route = slower  # type: ignore[method-assign]


def pid_marks() -> tuple[Callable[[], object], Callable[[], object]]:
    """Markers callgrind sees: libc's getppid zeroes its counters (--zero-before),
    getpgrp dumps them (--dump-before). Neither is called anywhere else here."""
    return os.getppid, os.getpgrp
