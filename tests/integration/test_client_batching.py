"""Dynamic batching in the clients, against a real sidecar: concurrent route() calls go
out as RouteStream batches and each caller gets its own answer, the same as unary;
an invalid request fails alone; a lone call is not held for its window; a
restarted sidecar costs the callers nothing; the blocking client batches calls from
several threads."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from hitl_client import AsyncRouterClient, Batching, RouteError, RouterClient, route_request
from hitl_client.router import RouteRequest, RouteResponse
from tests.artefacts import confident_logits
from tests.integration.conftest import SidecarProcess, start_sidecar

pytestmark = pytest.mark.integration


def requests(prefix: str, n: int) -> list[RouteRequest]:
    return [
        route_request(f"{prefix}-{i}", "m", confident_logits(i % 3, 0.5 + (i % 7)))
        for i in range(n)
    ]


def test_concurrent_calls_share_batches_and_answer_as_unary(sidecar: SidecarProcess) -> None:
    """64 concurrent calls take a few batches; every answer equals the unary one."""

    async def run() -> tuple[list[RouteResponse], list[RouteResponse], int]:
        batch = requests("b", 64)
        async with AsyncRouterClient(
            sidecar.address, batching=Batching(max_items=16, window_us=2000)
        ) as batched:
            answers = await asyncio.gather(*(batched.route(r) for r in batch))
            assert batched.coalescer is not None
            sent = batched.coalescer.batches
        async with AsyncRouterClient(sidecar.address) as unary:
            again = [await unary.route(r) for r in batch]
        return list(answers), again, sent

    answers, again, sent = asyncio.run(run())
    assert sent <= 8
    assert answers == again  # the replays of the same request ids: the same decisions
    assert [a.request_id for a in answers] == [f"b-{i}" for i in range(64)]


def test_an_invalid_request_fails_alone(sidecar: SidecarProcess) -> None:
    """A request with the wrong class count gets INVALID_ARGUMENT; the request that
    shared its batch does not."""

    async def run() -> list[RouteResponse | BaseException]:
        first = route_request("first", "m", confident_logits(0))
        good = route_request("ok", "m", confident_logits(1))
        bad = route_request("bad", "m", [0.1, 0.2])
        async with AsyncRouterClient(sidecar.address, batching=Batching(window_us=50_000)) as c:
            calls = (c.route(first), c.route(good), c.route(bad))  # the last two: one batch
            return list(await asyncio.gather(*calls, return_exceptions=True))

    _, ok, failed = asyncio.run(run())
    assert not isinstance(ok, BaseException)
    assert isinstance(failed, RouteError)
    assert isinstance(failed, grpc.RpcError)
    assert failed.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[1].logits" in failed.details()


def test_a_lone_call_goes_out_at_once(sidecar: SidecarProcess) -> None:
    """With no batch on its way, a call is sent at once, not held for its window."""

    async def run() -> float:
        async with AsyncRouterClient(
            sidecar.address, batching=Batching(max_items=64, window_us=1_000_000)
        ) as client:
            await client.route(route_request("warm", "m", confident_logits(0)))
            start = time.perf_counter()
            await client.route(route_request("lone", "m", confident_logits(1)))
            return time.perf_counter() - start

    assert asyncio.run(run()) < 0.5  # a call held for its window would wait a second


def test_a_restarted_sidecar_costs_the_callers_nothing(tmp_path: Path, policy_file: Path) -> None:
    """Calls made across a sidecar restart on the same port are all answered: the
    broken stream's batches are sent again and the next batch opens a new stream."""
    first = start_sidecar(tmp_path, policy_file)
    first.wait_serving()
    address = first.address

    async def run() -> list[RouteResponse]:
        async with AsyncRouterClient(
            address, timeout=20.0, batching=Batching(window_us=500)
        ) as client:
            before = await asyncio.gather(*(client.route(r) for r in requests("x", 8)))
            assert first.stop() == 0
            second = start_sidecar(tmp_path, policy_file, listen=address)
            try:
                second.wait_serving()
                after = await asyncio.gather(*(client.route(r) for r in requests("y", 8)))
            finally:
                second.stop()
            assert client.coalescer is not None
            assert client.coalescer.stream_failures >= 1  # the break was seen and counted
            return [*before, *after]

    answers = asyncio.run(run())
    assert len(answers) == 16


def test_the_blocking_client_batches_calls_from_threads(sidecar: SidecarProcess) -> None:
    """Eight threads calling route() at once share batches and each get their answer."""
    batch = requests("t", 32)
    batching = Batching(max_items=8, window_us=3000)
    with RouterClient(sidecar.address, batching=batching) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(client.route, batch))
    assert [a.request_id for a in answers] == [f"t-{i}" for i in range(32)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_items": 0}, "max_items must be 1 to 4096"), ({"window_us": -1}, "window_us")],
)
def test_bad_batching_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    """Settings out of range fail at construction, naming the setting."""
    with pytest.raises(ValueError, match=message):
        Batching(**kwargs)  # type: ignore[arg-type]
