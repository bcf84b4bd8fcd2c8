"""The floor: a Router servicer in the same framework (grpc.aio) that does nothing
but echo the request id. What the sidecar costs is measured against it.

    python -m benchmarks.floor --listen 127.0.0.1:0 --port-file FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


class NothingRouter(pb_grpc.RouterServicer):
    async def Route(self, request: pb.RouteRequest, context: Context) -> pb.RouteResponse:
        return pb.RouteResponse(request_id=request.request_id)

    async def RouteBatch(
        self, request: pb.RouteBatchRequest, context: Context
    ) -> pb.RouteBatchResponse:
        return _echo(request)

    async def RouteStream(
        self, request_iterator: AsyncIterator[pb.RouteBatchRequest], context: Context
    ) -> AsyncIterator[pb.RouteBatchResponse]:
        async for batch in request_iterator:
            yield _echo(batch)

    async def RecordOutcome(
        self, request: pb.OutcomeRequest, context: Context
    ) -> pb.OutcomeResponse:
        return pb.OutcomeResponse()


def _echo(batch: pb.RouteBatchRequest) -> pb.RouteBatchResponse:
    return pb.RouteBatchResponse(
        results=[
            pb.RouteResult(response=pb.RouteResponse(request_id=r.request_id))
            for r in batch.requests
        ]
    )


async def serve(listen: str, port_file: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RouterServicer_to_server(NothingRouter(), server)
    port = server.add_insecure_port(listen)
    await server.start()
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(f"{listen.rpartition(':')[0]}:{port}")
    tmp.replace(port_file)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--port-file", required=True, type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.port_file))
