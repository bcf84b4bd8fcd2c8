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

from benchmarks.loadgen import ClosedLoopResult, LoadResult, WorkerResult, merge, open_loop


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
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def call(i: int) -> bool:
            body = {**bodies[i % len(bodies)], "request_id": f"{tag}-{i}"}
            async with session.post(url, json=body) as response:
                answer = await response.json()
                response.raise_for_status()
            return bool(answer.get("escalated"))

        return await open_loop(rate, seconds, call, aiohttp.ClientError)


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
