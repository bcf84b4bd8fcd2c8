"""Closed-loop throughput of RouteBatch and RouteStream, in predictions per second.

Every measurement sends request ids of its own (a random prefix in each): a
request_id the sidecar has seen in its replay window is answered from there, far
more cheaply than a new prediction, so repeating ids across measurements would
count replays as throughput."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from benchmarks.loadgen import request_at
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc

CONCURRENCY = 2  # batches (or streams) in flight at once


def measure(
    target: str, method: str, batch_size: int, seconds: float, payloads: list[bytes]
) -> float:
    """Predictions per second answered by method ("batch" or "stream") in a worker process."""
    with mp.get_context("spawn").Pool(1) as pool:
        rate: float = pool.apply(_run, (target, method, batch_size, seconds, payloads))
    return rate


def _run(target: str, method: str, batch_size: int, seconds: float, payloads: list[bytes]) -> float:
    return asyncio.run(_drive(target, method, batch_size, seconds, payloads))


async def _drive(
    target: str, method: str, batch_size: int, seconds: float, payloads: list[bytes]
) -> float:
    requests = [pb.RouteRequest.FromString(p) for p in payloads]
    counter = iter(range(10**12))
    run = uuid.uuid4().hex[:12]

    def batch(lane: int) -> pb.RouteBatchRequest:
        items = []
        for _ in range(batch_size):
            i = next(counter)
            items.append(request_at(requests, i, f"{method}-{run}-{lane}-{i}"))
        return pb.RouteBatchRequest(requests=items)

    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.RouterStub(channel)
        await channel.channel_ready()
        deadline = time.perf_counter() + seconds
        answered = 0

        async def unary_lane(lane: int) -> None:
            nonlocal answered
            while time.perf_counter() < deadline:
                response = await stub.RouteBatch(batch(lane), timeout=10)
                answered += len(response.results)

        async def stream_lane(lane: int) -> None:
            nonlocal answered

            async def outbound() -> AsyncIterator[pb.RouteBatchRequest]:
                while time.perf_counter() < deadline:
                    yield batch(lane)
                    await turn.wait()
                    turn.clear()

            turn = asyncio.Event()
            async for response in stub.RouteStream(outbound()):
                answered += len(response.results)
                turn.set()

        lane = stream_lane if method == "stream" else unary_lane
        start = time.perf_counter()
        await asyncio.gather(*(lane(i) for i in range(CONCURRENCY)))
        return answered / (time.perf_counter() - start)
