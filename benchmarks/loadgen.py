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
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from hitl_client import AsyncRouterClient, Batching
from hitl_client.stubs.hitl.v1 import router_pb2 as pb

Result = TypeVar("Result")


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
    target: str,
    rate: float,
    seconds: float,
    payloads: list[bytes],
    workers: int,
    tag: str,
    batching: Batching | None = None,
) -> LoadResult:
    """Drive target at rate (requests/s, split over workers) for seconds; with
    batching, each worker's calls go through one client that coalesces them."""
    context = mp.get_context("spawn")
    with context.Pool(workers) as pool:
        args = [
            (target, rate / workers, seconds, payloads[w::workers], f"{tag}-w{w}", batching)
            for w in range(workers)
        ]
        results = pool.starmap(in_worker, [(_drive, *each) for each in args])
    return merge(results, rate)


def merge(results: list[WorkerResult], rate: float) -> LoadResult:
    """The workers' results as one load's."""
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


def in_worker(drive: Callable[..., Coroutine[Any, Any, Result]], *args: Any) -> Result:
    """Run drive(*args) on an event loop of its own (what each pool process does)."""
    return asyncio.run(drive(*args))


def in_worker_process(drive: Callable[..., Coroutine[Any, Any, Result]], *args: Any) -> Result:
    """``in_worker`` in a process of its own (spawned): the load it makes does not share
    this process's interpreter."""
    with mp.get_context("spawn").Pool(1) as pool:
        result: Result = pool.apply(in_worker, (drive, *args))
    return result


def request_at(requests: list[pb.RouteRequest], i: int, request_id: str) -> pb.RouteRequest:
    """A copy of the i-th of requests (they repeat in turn) under request_id."""
    request = pb.RouteRequest()
    request.CopyFrom(requests[i % len(requests)])
    request.request_id = request_id
    return request


async def _drive(
    target: str,
    rate: float,
    seconds: float,
    payloads: list[bytes],
    tag: str,
    batching: Batching | None,
) -> WorkerResult:
    requests = [pb.RouteRequest.FromString(p) for p in payloads]
    async with AsyncRouterClient(target, timeout=5.0, max_attempts=1, batching=batching) as client:
        await client.wait_ready()

        async def call(i: int) -> bool:
            response = await client.route(request_at(requests, i, f"{tag}-{i}"), timeout=5.0)
            return bool(response.escalation_id)

        return await open_loop(rate, seconds, call, grpc.RpcError)


async def open_loop(
    rate: float,
    seconds: float,
    call: Callable[[int], Awaitable[bool]],
    failure: type[BaseException],
) -> WorkerResult:
    """Fire call(i) at start + i / rate for seconds, whatever the earlier calls are
    doing, and measure each from its scheduled time. call(i) answers whether the
    request was escalated; raising failure counts an error."""
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    escalated = np.zeros(total, dtype=np.bool_)
    errors = 0

    async def timed(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            escalated[i] = await call(i)
        except failure:
            errors += 1
            return
        latencies[i] = (time.perf_counter() - scheduled) * 1000.0

    loop_start = time.perf_counter() + 0.05
    started = time.time() + 0.05
    tasks = []
    for i in range(total):
        scheduled = loop_start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - loop_start
    ok = ~np.isnan(latencies)
    due = started + np.arange(total) / rate
    return WorkerResult(latencies[ok], errors, total, elapsed, started, due[ok], escalated[ok])


def percentiles(latencies_ms: npt.NDArray[np.float64]) -> dict[str, float]:
    if latencies_ms.size == 0:
        return {k: float("nan") for k in ("p50", "p90", "p99", "p99.9", "max")}
    p50, p90, p99, p999 = (float(p) for p in np.percentile(latencies_ms, [50, 90, 99, 99.9]))
    return {"p50": p50, "p90": p90, "p99": p99, "p99.9": p999, "max": float(latencies_ms.max())}


@dataclass(frozen=True)
class ClosedLoopResult:
    rate: float  # answers per second
    latencies_ms: npt.NDArray[np.float64]
    errors: int


def closed_loop(
    target: str,
    concurrency: int,
    seconds: float,
    payloads: list[bytes],
    tag: str,
    batching: Batching | None = None,
) -> ClosedLoopResult:
    """concurrency callers in one worker process, each sending its next Route as soon
    as its last is answered, through one client (coalescing them with batching)."""
    return in_worker_process(_closed, target, concurrency, seconds, payloads, tag, batching)


async def _closed(
    target: str,
    concurrency: int,
    seconds: float,
    payloads: list[bytes],
    tag: str,
    batching: Batching | None,
) -> ClosedLoopResult:
    requests = [pb.RouteRequest.FromString(p) for p in payloads]
    async with AsyncRouterClient(target, timeout=10.0, max_attempts=1, batching=batching) as client:
        await client.wait_ready()

        async def call(lane: int, i: int) -> None:
            await client.route(request_at(requests, i, f"{tag}-{lane}-{i}"))

        return await closed_lanes(concurrency, seconds, call, grpc.RpcError)


async def closed_lanes(
    concurrency: int,
    seconds: float,
    call: Callable[[int, int], Awaitable[None]],
    failure: type[BaseException],
) -> ClosedLoopResult:
    """concurrency lanes, each awaiting call(lane, i) for its next i as soon as its last
    answered, for seconds; raising failure counts an error."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def lane_of(lane: int) -> None:
        nonlocal errors
        i = lane
        while (start := time.perf_counter()) < deadline:
            try:
                await call(lane, i)
            except failure:
                errors += 1
                continue
            finally:
                i += concurrency
            latencies.append((time.perf_counter() - start) * 1000.0)

    began = time.perf_counter()
    await asyncio.gather(*(lane_of(lane) for lane in range(concurrency)))
    elapsed = time.perf_counter() - began
    return ClosedLoopResult(len(latencies) / elapsed, np.array(latencies), errors)
