"""Open-loop load over HTTP/JSON, for the FastAPI peer: ``loadgen`` for POST /route.

The same discipline as ``loadgen``: each worker process fires call i at
``start + i / rate`` whether or not earlier calls have answered, and measures its
latency from that time, on one keep-alive connection pool (aiohttp)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from typing import Any

import aiohttp
import numpy as np

from benchmarks.loadgen import ClosedLoopResult, LoadResult, WorkerResult, merge


def run_load(
    url: str, rate: float, seconds: float, bodies: list[dict[str, Any]], workers: int, tag: str
) -> LoadResult:
    """Drive url at rate (requests/s, split over workers) for seconds."""
    with mp.get_context("spawn").Pool(workers) as pool:
        args = [
            (url, rate / workers, seconds, bodies[w::workers], f"{tag}-w{w}")
            for w in range(workers)
        ]
        results = pool.starmap(_worker, args)
    return merge(results, rate)


def _worker(
    url: str, rate: float, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> WorkerResult:
    return asyncio.run(_drive(url, rate, seconds, bodies, tag))


async def _drive(
    url: str, rate: float, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> WorkerResult:
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    escalated = np.zeros(total, dtype=np.bool_)
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def call(i: int, scheduled: float) -> None:
            nonlocal errors
            body = {**bodies[i % len(bodies)], "request_id": f"{tag}-{i}"}
            try:
                async with session.post(url, json=body) as response:
                    answer = await response.json()
                    if response.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies[i] = (time.perf_counter() - scheduled) * 1000.0
            escalated[i] = bool(answer.get("escalated"))

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


def closed_loop(
    url: str, concurrency: int, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> ClosedLoopResult:
    """``loadgen.closed_loop`` over HTTP: concurrency callers on one connection pool."""
    with mp.get_context("spawn").Pool(1) as pool:
        result: ClosedLoopResult = pool.apply(
            _closed_worker, (url, concurrency, seconds, bodies, tag)
        )
    return result


def _closed_worker(
    url: str, concurrency: int, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> ClosedLoopResult:
    return asyncio.run(_closed(url, concurrency, seconds, bodies, tag))


async def _closed(
    url: str, concurrency: int, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> ClosedLoopResult:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def caller(lane: int) -> None:
            nonlocal errors
            i = lane
            while (start := time.perf_counter()) < deadline:
                body = {**bodies[i % len(bodies)], "request_id": f"{tag}-{lane}-{i}"}
                i += concurrency
                try:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if not ok:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - start) * 1000.0)

        began = time.perf_counter()
        await asyncio.gather(*(caller(lane) for lane in range(concurrency)))
        elapsed = time.perf_counter() - began
    return ClosedLoopResult(len(latencies) / elapsed, np.array(latencies), errors)
