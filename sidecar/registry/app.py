"""Assemble and run a registry process: store, signer, the head publisher, gRPC server
(plain, TLS or mTLS) with health and reflection, metrics; graceful shutdown on
SIGTERM and SIGINT.

Shutdown order: health turns NOT_SERVING (on the health listener too, when there is
one), the server drains in-flight calls for the grace period (Watch streams are cut;
sidecars reconnect to another replica), the health listener and the publisher stop,
then the store and metric exporters are closed."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import grpc
import structlog

# grpc_health.v1.health re-exports this module as ``aio`` in a way mypy cannot follow.
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader

from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from hitl_client.stubs.hitl.v1 import registry_pb2_grpc as pb_grpc
from sidecar.clock import Clock, SystemClock
from sidecar.policy.signing import load_signer
from sidecar.registry.config import RegistryConfig
from sidecar.registry.metrics import RegistryMetrics
from sidecar.registry.server import Publisher, RegistryServicer
from sidecar.registry.service import Registry
from sidecar.registry.store import RegistryStore, open_store
from sidecar.serving import (
    NO_REUSEPORT,
    add_servicer,
    async_stop_event,
    bind,
    enable_reflection,
    health_only_server,
    server_credentials,
    write_port_file,
)
from sidecar.settings import env_of
from sidecar.supervision import Supervisor
from sidecar.telemetry.metrics import observe_tasks, service_meters

log = structlog.get_logger("hitl.registry")

REGISTRY_SERVICE = pb.DESCRIPTOR.services_by_name["Registry"].full_name
HEALTH_SERVICES = ("", REGISTRY_SERVICE)
INSTRUMENTATION = "hitl.registry"


@dataclass
class RegistryServer:
    """A registry's running parts (tests build one in-process)."""

    config: RegistryConfig
    registry: Registry
    publisher: Publisher
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    meters: MeterProvider
    address: str
    supervisor: Supervisor
    health_server: grpc.aio.Server | None = None  # HITL_REGISTRY_HEALTH_LISTEN
    health_address: str = ""
    _publishing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        self._publishing = asyncio.create_task(
            self.supervisor.run("registry-publisher", self.publisher.run),
            name="registry-publisher",
        )
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "registry.listening",
            address=self.address,
            health_address=self.health_address,
            db=_where(self.config.db),
        )

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.shutdown_grace_seconds if grace is None else grace)
        if self.health_server is not None:
            # Health calls are instant; only a Watch stream can be cut short here.
            await self.health_server.stop(0)
        if self._publishing is not None:
            self._publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publishing
        self.registry.store.close()
        self.meters.shutdown()
        log.info("registry.stopped")


def build(
    config: RegistryConfig,
    *,
    clock: Clock | None = None,
    store: RegistryStore | None = None,
    metric_readers: list[MetricReader] | None = None,
) -> RegistryServer:
    """Wire a registry from config; keyword arguments replace the real adapters."""
    clock = clock or SystemClock()
    signer = load_signer(config.signing_key)
    _, meters = service_meters(
        "hitl-registry",
        config.metrics_addr,
        env_of(RegistryConfig, "metrics_addr"),
        metric_readers or (),
    )
    registry = Registry(store or open_store(config.db), signer, clock)
    publisher = Publisher(registry, clock, config.head_poll_seconds, config.refresh_seconds)
    metrics = RegistryMetrics(meters.get_meter(INSTRUMENTATION), lambda: publisher.revision)
    supervisor = Supervisor()
    observe_tasks(meters.get_meter(INSTRUMENTATION), supervisor.tasks.values)
    server = grpc.aio.server(options=NO_REUSEPORT)
    add_servicer(
        pb_grpc.add_RegistryServicer_to_server,
        RegistryServicer(registry, publisher, clock, metrics),
        server,
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, REGISTRY_SERVICE)
    address = bind(
        server,
        config.listen,
        env_of(RegistryConfig, "listen"),
        server_credentials(config.tls_cert, config.tls_key, config.client_ca),
    )
    health_server, health_address = None, ""
    if config.health_listen:
        health_server, health_address = health_only_server(
            health, config.health_listen, env_of(RegistryConfig, "health_listen")
        )
    log.info("registry.signing", key_id=signer.key_id)
    return RegistryServer(
        config,
        registry,
        publisher,
        server,
        health,
        meters,
        address,
        supervisor,
        health_server,
        health_address,
    )


def _where(db: str) -> str:
    """The database without credentials, for logs."""
    return db.rsplit("@", maxsplit=1)[-1] if "://" in db else db


async def serve(config: RegistryConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    registry = build(config)
    await registry.start()
    if config.port_file is not None:
        write_port_file(config.port_file, registry.address)
    await async_stop_event().wait()
    log.info("registry.stopping", grace_seconds=config.shutdown_grace_seconds)
    await registry.stop()
