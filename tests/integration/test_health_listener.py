"""The control-plane services' plaintext health listener (HITL_*_HEALTH_LISTEN), served
in-process beside a TLS port: the service's own health and nothing else, SERVING once
started, NOT_SERVING while the service drains, gone once it has stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from hitl_client.stubs.hitl.v1 import registry_pb2 as gpb
from hitl_client.stubs.hitl.v1 import registry_pb2_grpc as gpb_grpc
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.clock import FakeClock
from sidecar.review.app import REVIEW_SERVICE, ReviewServer, build
from sidecar.review.config import ReviewConfig
from tests.certs import Pki, serving_pair
from tests.integration.conftest import reflection_v1_services, wait_for
from tests.registry import in_process

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(channel: grpc.Channel, service: str) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    return int(reply.status)


@contextmanager
def review_over_tls(tmp_path: Path) -> Iterator[tuple[ReviewServer, Pki]]:
    """A review queue serving TLS on its port, its health in clear on another; the
    caller stops it."""
    pki = serving_pair(tmp_path / "tls", "review CA")
    config = ReviewConfig(
        listen="127.0.0.1:0",
        health_listen="127.0.0.1:0",
        db=f"sqlite:{tmp_path / 'review.db'}",
        tls_cert=pki.cert,
        tls_key=pki.key,
    )
    review = build(config, clock=FakeClock())
    with capture_logs() as logs:
        review.start()
    (listening,) = [e for e in logs if e["event"] == "review.listening"]
    assert listening["health_address"] == review.grpc.health_address
    yield review, pki


def test_review_health_port_answers_in_clear_and_serves_nothing_else(tmp_path: Path) -> None:
    """Beside a TLS port, the health port answers a plaintext Check SERVING (the queue
    and the whole server), lists only health and reflection, and a ReviewQueue call
    there is UNIMPLEMENTED."""
    with review_over_tls(tmp_path) as (review, pki):
        try:
            assert review.grpc.health_address != review.address
            with grpc.insecure_channel(review.grpc.health_address) as channel:
                assert health_status(channel, REVIEW_SERVICE) == SERVING
                assert health_status(channel, "") == SERVING
                with pytest.raises(grpc.RpcError) as raised:
                    rpb_grpc.ReviewQueueStub(channel).List(rpb.ListRequest(), timeout=2)
                services = reflection_v1_services(channel)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert REVIEW_SERVICE not in services
            assert "grpc.health.v1.Health" in services
            tls = grpc.ssl_channel_credentials(pki.ca_pem)
            with grpc.secure_channel(review.address, tls) as channel:
                assert health_status(channel, REVIEW_SERVICE) == SERVING
        finally:
            review.stop(grace=0)


def test_review_health_port_says_not_serving_while_the_queue_drains(tmp_path: Path) -> None:
    """While stop(grace) drains a call still open on the TLS port (a health Watch), the
    health port answers NOT_SERVING; once the queue has stopped, it is gone too."""
    with review_over_tls(tmp_path) as (review, pki):
        health_address = review.grpc.health_address
        tls = grpc.ssl_channel_credentials(pki.ca_pem)
        with grpc.secure_channel(review.address, tls) as secure:
            watch = health_pb2_grpc.HealthStub(secure).Watch(
                health_pb2.HealthCheckRequest(service=REVIEW_SERVICE), timeout=30
            )
            assert next(watch).status == SERVING
            stopping = threading.Thread(target=review.stop, args=(30.0,))
            stopping.start()
            with grpc.insecure_channel(health_address) as channel:
                wait_for(
                    lambda: health_status(channel, REVIEW_SERVICE) == NOT_SERVING,
                    5,
                    "NOT_SERVING on the health port while draining",
                )
                assert health_status(channel, "") == NOT_SERVING
            assert next(watch).status == NOT_SERVING
            assert stopping.is_alive()  # the Watch still holds the drain open
            watch.cancel()
            stopping.join(10)
            assert not stopping.is_alive()
        with (
            grpc.insecure_channel(health_address) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            health_status(channel, "")
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_registry_health_port_answers_in_clear_and_serves_nothing_else(tmp_path: Path) -> None:
    """The registry (an asyncio server) behind TLS: its health port answers a plaintext
    Check SERVING for the registry and logs its address at start; a Registry call
    there is UNIMPLEMENTED."""
    pki = serving_pair(tmp_path / "tls", "registry CA")
    settings = {"health_listen": "127.0.0.1:0", "tls_cert": pki.cert, "tls_key": pki.key}
    with capture_logs() as logs, in_process("sqlite", tmp_path, **settings) as registry:
        assert registry.server is not None
        health_address = registry.server.health_address
        assert health_address != registry.address
        with grpc.insecure_channel(health_address) as channel:
            assert health_status(channel, "hitl.v1.Registry") == SERVING
            with pytest.raises(grpc.RpcError) as raised:
                gpb_grpc.RegistryStub(channel).GetPolicy(gpb.GetPolicyRequest(), timeout=2)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    (listening,) = [e for e in logs if e["event"] == "registry.listening"]
    assert listening["health_address"] == health_address
