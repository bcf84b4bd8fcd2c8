"""The client for serving code that calls the hitl sidecar: the contract's generated
stubs (``hitl_client.stubs``) and the Router clients (``hitl_client.router``), with
optional client-side batching (``hitl_client.coalescer``). It needs only grpcio,
protobuf and grpcio-health-checking; ``hitl-client[tracing]`` adds opentelemetry-api
so the caller's trace context travels with each call.

    from hitl_client import RouterClient, route_request
    with RouterClient("127.0.0.1:7431") as client:
        decision = client.route(route_request("req-1", "digits", logits))
"""

from hitl_client.coalescer import Batching, RouteError
from hitl_client.router import (
    TIER_AUTOMATED,
    TIER_HUMAN_ASSISTED,
    TIER_HUMAN_PRIMARY,
    AsyncRouterClient,
    RouterClient,
    route_request,
)

__version__ = "0.1.0"
__all__ = [
    "TIER_AUTOMATED",
    "TIER_HUMAN_ASSISTED",
    "TIER_HUMAN_PRIMARY",
    "AsyncRouterClient",
    "Batching",
    "RouteError",
    "RouterClient",
    "route_request",
]
