"""Open-loop load generation in worker processes.

Each worker sends at a constant rate on its own channel and event loop: call i is
scheduled at ``start + i / rate`` and fired then whether or not earlier calls have
answered, and its latency is measured from that scheduled time. A stall in the
server (or in the worker) therefore shows up as latency of every call scheduled
during it, instead of silently lowering the rate (no coordinated omission)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass

import grpc
import numpy as np
import numpy.typing as npt

from sidecar._proto.hitl.v1 import router_pb2 as pb
from sidecar._proto.hitl.v1 import router_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class WorkerResult:
    latencies_ms: npt.NDArray[np.float64]  # of calls that succeeded
    errors: int
    sent: int
    elapsed: float
    started: float  # time.time() of the first scheduled call
    scheduled: npt.NDArray[np.float64]  # time.time() each succeeded call was due
    escalated: npt.NDArray[np.bool_]  # each succeeded call answered with an escalation


@dataclass(frozen=True)
class LoadResult:
    latencies_ms: npt.NDArray[np.float64]
    errors: int
    sent: int
    requested_rate: float
    achieved_rate: float
    # time.time() of the first scheduled call and of the last answer, over the workers
    window: tuple[float, float]
    scheduled: npt.NDArray[np.float64]  # time.time() each of latencies_ms was due
    escalated: npt.NDArray[np.bool_]  # each of latencies_ms answered with an escalation


def run_load(
    target: str, rate: float, seconds: float, payloads: list[bytes], workers: int, tag: str
) -> LoadResult:
    """Drive target at rate (requests/s, split over workers) for seconds."""
    context = mp.get_context("spawn")
    with context.Pool(workers) as pool:
        args = [
            (target, rate / workers, seconds, payloads[w::workers], f"{tag}-w{w}")
            for w in range(workers)
        ]
        results = pool.starmap(_worker, args)
    latencies = np.concatenate([r.latencies_ms for r in results])
    sent = sum(r.sent for r in results)
    elapsed = max(r.elapsed for r in results)
    return LoadResult(
        latencies,
        sum(r.errors for r in results),
        sent,
        rate,
        (sent - sum(r.errors for r in results)) / elapsed,
        (min(r.started for r in results), max(r.started + r.elapsed for r in results)),
        np.concatenate([r.scheduled for r in results]),
        np.concatenate([r.escalated for r in results]),
    )


def _worker(
    target: str, rate: float, seconds: float, payloads: list[bytes], tag: str
) -> WorkerResult:
    return asyncio.run(_drive(target, rate, seconds, payloads, tag))


async def _drive(
    target: str, rate: float, seconds: float, payloads: list[bytes], tag: str
) -> WorkerResult:
    requests = [pb.RouteRequest.FromString(p) for p in payloads]
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    escalated = np.zeros(total, dtype=np.bool_)
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        route = pb_grpc.RouterStub(channel).Route
        await channel.channel_ready()

        async def call(i: int, scheduled: float) -> None:
            nonlocal errors
            request = pb.RouteRequest()
            request.CopyFrom(requests[i % len(requests)])
            request.request_id = f"{tag}-{i}"
            try:
                response = await route(request, timeout=5.0)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies[i] = (time.perf_counter() - scheduled) * 1000.0
            escalated[i] = bool(response.escalation_id)

        loop_start = time.perf_counter() + 0.05
        started = time.time() + 0.05
        tasks = []
        for i in range(total):
            scheduled = loop_start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(i, scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - loop_start
    ok = ~np.isnan(latencies)
    due = started + np.arange(total) / rate
    return WorkerResult(latencies[ok], errors, total, elapsed, started, due[ok], escalated[ok])


def percentiles(latencies_ms: npt.NDArray[np.float64]) -> dict[str, float]:
    if latencies_ms.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p99", "p99.9", "max")}
    p50, p90, p99, p999 = np.percentile(latencies_ms, [50, 90, 99, 99.9])
    return {"p50": p50, "p90": p90, "p99": p99, "p99.9": p999, "max": float(latencies_ms.max())}
