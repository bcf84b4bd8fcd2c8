"""Open-loop load over HTTP/JSON, for the FastAPI peer: ``loadgen`` for POST /route.

The same discipline as ``loadgen``: each worker process fires call i at
``start + i / rate`` whether or not earlier calls have answered, and measures its
latency from that time, on one keep-alive connection pool (aiohttp)."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import aiohttp

from benchmarks.loadgen import (
    ClosedLoopResult,
    LoadResult,
    WorkerResult,
    closed_lanes,
    in_worker,
    in_worker_process,
    merge,
    open_loop,
)


def run_load(
    url: str, rate: float, seconds: float, bodies: list[dict[str, Any]], workers: int, tag: str
) -> LoadResult:
    """Drive url at rate (requests/s, split over workers) for seconds."""
    with mp.get_context("spawn").Pool(workers) as pool:
        args = [
            (url, rate / workers, seconds, bodies[w::workers], f"{tag}-w{w}")
            for w in range(workers)
        ]
        results = pool.starmap(in_worker, [(_drive, *each) for each in args])
    return merge(results, rate)


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
    return in_worker_process(_closed, url, concurrency, seconds, bodies, tag)


async def _closed(
    url: str, concurrency: int, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> ClosedLoopResult:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(lane: int, i: int) -> None:
            body = {**bodies[i % len(bodies)], "request_id": f"{tag}-{lane}-{i}"}
            async with session.post(url, json=body) as response:
                await response.read()
                response.raise_for_status()

        return await closed_lanes(concurrency, seconds, call, aiohttp.ClientError)
