"""What every hitl server process does the same way: bind its listen address,
enable reflection, serve health on a plaintext listener of its own when asked (for
the kubelet's probes, which cannot speak TLS), serve Prometheus, announce its address
in a port file, stop on SIGTERM or SIGINT, and turn its errors into gRPC status codes
(``status_of``: the one mapping, for every server, reading the status each error
class names; servicers only raise)."""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, overload

import grpc
from google.protobuf.message import DecodeError

# grpc_health.v1.health re-exports this module as ``aio`` in a way mypy cannot follow.
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from grpc_reflection.v1alpha import _async as reflection_async
from grpc_reflection.v1alpha import reflection, reflection_pb2
from opentelemetry.sdk.metrics.export import MetricReader

from sidecar.auth import bearer_token
from sidecar.errors import ConfigError, HitlError
from sidecar.files import replace_file
from sidecar.settings import ClientCredentials, env_of, split_host_port
from sidecar.tls_reload import ReloadingCredentials


def status_of(exc: HitlError) -> grpc.StatusCode:
    """The status a caller gets for exc: the ``grpc_status`` its class names, or
    inherits from its nearest ancestor that names one (SpoolFull is an
    EscalationRefused: UNAVAILABLE; ItemConflict is a Conflict: FAILED_PRECONDITION);
    INTERNAL when none does."""
    return grpc.StatusCode[type(exc).grpc_status]


def bind(
    server: grpc.Server | grpc.aio.Server,
    listen: str,
    var: str,
    credentials: grpc.ServerCredentials | None = None,
) -> str:
    """Bind listen (``HOST:PORT`` or ``unix:PATH``), with TLS when credentials are
    given; a TCP port 0 becomes the port the kernel chose. A listen address that
    cannot be bound is a ConfigError naming var."""
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"{var}: cannot listen on {listen}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"{var}: cannot listen on {listen}")
    if listen.startswith("unix:"):
        return listen
    return f"{listen.rpartition(':')[0]}:{port}"


MAX_DETAILS = 1024  # characters of a status message


def details(message: str) -> str:
    """A status message as sent: errors may quote what the caller sent, so the
    message is cut to a bounded length (gRPC refuses trailers over 16 KiB)."""
    if len(message) <= MAX_DETAILS:
        return message
    return message[:MAX_DETAILS] + f"... ({len(message)} characters)"


def caller_credentials(
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any],
) -> tuple[str, str]:
    """(bearer token, client certificate common name) a call came with; '' for none."""
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    names = context.auth_context().get("x509_common_name") or []
    first = next(iter(names), b"")
    return bearer_token(metadata), first.decode() if isinstance(first, bytes) else ""


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    """TLS when a certificate is configured; mTLS (client certificates required and
    checked against the CA) when a client CA is too. The files are read again when
    they change (a renewed certificate is served from the next connection on)."""
    if cert is None or key is None:
        return None
    return ReloadingCredentials(cert, key, client_ca).credentials()


def client_channel(
    target: str, ca: bytes | None = None, cert: bytes | None = None, key: bytes | None = None
) -> grpc.Channel:
    """A channel to a hitl service: TLS when ca is given (mTLS with cert and key)."""
    if ca is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, key, cert))


def async_channel(target: str, credentials: ClientCredentials) -> grpc.aio.Channel:
    """An asyncio channel to a hitl service, as a sidecar's sinks open one: TLS when
    the credentials hold a CA (mTLS with a client certificate and key)."""
    if credentials.ca is None:
        return grpc.aio.insecure_channel(target)
    tls = grpc.ssl_channel_credentials(credentials.ca, credentials.key, credentials.cert)
    return grpc.aio.secure_channel(target, tls)


class ServiceClient:
    """A blocking client's one channel to a hitl service (TLS when ca is given, mTLS
    with cert and key), its credentials sent with every call and a deadline on each
    (timeout, or the client's default_timeout)."""

    default_timeout = 10.0
    service = ""  # the service's full name, for its health check

    def __init__(
        self,
        target: str,
        token: str = "",
        *,
        ca: bytes | None = None,
        cert: bytes | None = None,
        key: bytes | None = None,
        timeout: float | None = None,
    ) -> None:
        self.target = target
        self._channel = client_channel(target, ca, cert, key)
        self._metadata = bearer(token)
        self._timeout = self.default_timeout if timeout is None else timeout

    def serving(self) -> bool:
        """Whether the service answers its health check SERVING."""
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=1.0
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying token ('' sends none)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(server: grpc.Server | grpc.aio.Server, *services: str) -> None:
    """Server reflection for services, health and reflection itself, as
    ``grpc.reflection.v1`` (what current tools ask first) and ``v1alpha``. The Python
    package implements v1alpha only; v1's messages are the same on the wire, so the
    same servicer answers both names."""
    health = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    names = (*services, health, reflection.SERVICE_NAME, REFLECTION_V1)
    reflection.enable_server_reflection(names, server)
    if isinstance(server, grpc.aio.Server):
        servicer: Any = reflection_async.ReflectionServicer(names)
    else:
        servicer = reflection.ReflectionServicer(names)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info}),)
    )


# A listener refuses to share its port (gRPC's default is SO_REUSEPORT), so a port
# already taken fails at start-up instead of splitting another server's calls.
NO_REUSEPORT = (("grpc.so_reuseport", 0),)


# The asyncio servicer's module is untyped (Any), so it is the overload tried last.
@overload
def health_only_server(
    health: HealthServicer, listen: str, var: str
) -> tuple[grpc.Server, str]: ...
@overload
def health_only_server(
    health: health_aio.HealthServicer, listen: str, var: str
) -> tuple[grpc.aio.Server, str]: ...
def health_only_server(
    health: HealthServicer | health_aio.HealthServicer, listen: str, var: str
) -> tuple[grpc.Server | grpc.aio.Server, str]:
    """A plaintext server on listen (from var) carrying health and reflection, nothing
    else: the service's own servicer, so it answers as the service does (NOT_SERVING
    while draining). An asyncio servicer gets an asyncio server."""
    server: grpc.Server | grpc.aio.Server
    if isinstance(health, health_aio.HealthServicer):
        server = grpc.aio.server(options=NO_REUSEPORT)
    else:
        # Health calls are instant; a Watch stream holds a thread until the stop.
        pool = futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="health")
        server = grpc.server(pool, options=NO_REUSEPORT)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server)
    return server, bind(server, listen, var)


def prometheus_reader(address: str, var: str) -> MetricReader:
    """A metric reader served for scraping on address (``HOST:PORT``, from var)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    host, port = split_host_port(address, var)
    start_http_server(port, addr=host)
    return PrometheusMetricReader()


def write_port_file(path: Path, address: str) -> None:
    """Write the bound address atomically: a reader sees all of it or no file."""
    replace_file(path, address.encode())


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (for a process whose main thread waits)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    return stop


class ServerSettings(Protocol):
    """What a control-plane server's settings say about its listener."""

    @property
    def listen(self) -> str: ...
    @property
    def health_listen(self) -> str: ...
    @property
    def workers(self) -> int: ...
    @property
    def tls_cert(self) -> Path | None: ...
    @property
    def tls_key(self) -> Path | None: ...
    @property
    def client_ca(self) -> Path | None: ...


@dataclass
class ThreadedServer:
    """A thread-pool gRPC server with health (NOT_SERVING until started, again from
    the moment it stops) and reflection, bound with its TLS settings; and, when
    asked, a plaintext listener serving the same health and nothing else."""

    server: grpc.Server
    health: HealthServicer
    address: str
    services: tuple[str, ...]
    health_server: grpc.Server | None = None
    health_address: str = ""

    def start(self) -> None:
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        for service in self.services:
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        """Stop taking calls and let those in flight finish for up to grace seconds;
        the health listener answers NOT_SERVING until they have."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()


def threaded_server(
    settings: ServerSettings,
    settings_class: type,
    service: str,
    add: Callable[[Any, grpc.Server], None],
    servicer: Any,
) -> ThreadedServer:
    """settings' server for one servicer (``add``: its generated add_..._to_server),
    its listen address checked against settings_class's declaration."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix=service),
        options=NO_REUSEPORT,
    )
    add_servicer(add, servicer, server)
    health_servicer = HealthServicer()
    services = ("", service)
    for name in services:
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, service)
    credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.client_ca)
    address = bind(server, settings.listen, env_of(settings_class, "listen"), credentials)
    if not settings.health_listen:
        return ThreadedServer(server, health_servicer, address, services)
    health_server, health_address = health_only_server(
        health_servicer, settings.health_listen, env_of(settings_class, "health_listen")
    )
    return ThreadedServer(server, health_servicer, address, services, health_server, health_address)


class Service(Protocol):
    """A blocking service process's running parts (the review queue, the injector)."""

    @property
    def address(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def serve_until_signalled(build: Callable[[], Service], port_file: Path | None) -> None:
    """Build and start a service, write its port file, and stop it gracefully on SIGTERM
    or SIGINT (a signal during build is kept, not lost)."""
    stop = stop_event()
    service = build()
    service.start()
    if port_file is not None:
        write_port_file(port_file, service.address)
    stop.wait()
    service.stop()


def async_stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (for a process run by asyncio)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A request body protobuf could not parse (a corrupt frame, invalid UTF-8 in a
    string field): answered INVALID_ARGUMENT, never gRPC's own INTERNAL or UNKNOWN."""

    type_name: str
    reason: str

    def message(self, field: str = "request") -> str:
        return f"{field}: not a valid {self.type_name} ({self.reason})"


Reader = Callable[[bytes], Any]


def add_servicer(
    add: Callable[[Any, Any], None],
    servicer: object,
    server: grpc.Server | grpc.aio.Server,
    readers: Mapping[str, Reader] | None = None,
) -> None:
    """Register servicer as the generated ``add_*_to_server`` function would, with its
    requests read so that a body protobuf cannot parse is an ``Unreadable``: a unary
    request's call answers INVALID_ARGUMENT before the servicer runs; a streamed one
    is handed to the servicer, which answers it (readers: a method's own reader)."""
    captured = _Captured()
    add(servicer, captured)
    handlers = {
        name: _checked(handler, (readers or {}).get(name))
        for name, handler in captured.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(captured.service, handlers),)
    )
    # As the generated function does: grpc finds registered methods faster.
    getattr(server, "add_registered_method_handlers")(captured.service, handlers)  # noqa: B009


def reader(deserialize: Callable[[bytes], Any]) -> Reader:
    """deserialize, returning an Unreadable where protobuf cannot parse the body."""
    message = getattr(deserialize, "__self__", None)
    type_name = message.DESCRIPTOR.full_name if message is not None else "message"

    def read(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as exc:
            return Unreadable(type_name, str(exc) or "cannot be parsed")

    return read


class _Captured:
    """Stands in for a server while a generated add_*_to_server function runs."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, _: object) -> None:
        """The generic handler is rebuilt from the method handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def _checked(handler: Any, own_reader: Reader | None) -> Any:
    read = own_reader or reader(handler.request_deserializer)
    if handler.request_streaming:
        return handler._replace(request_deserializer=read)
    if handler.response_streaming:
        return handler._replace(
            request_deserializer=read, unary_stream=_refusing_stream(handler.unary_stream)
        )
    return handler._replace(request_deserializer=read, unary_unary=_refusing(handler.unary_unary))


def _refusing(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(behavior):

        async def answer_async(request: Any, context: Any) -> Any:
            if isinstance(request, Unreadable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(request.message()))
            return await behavior(request, context)

        return answer_async

    def answer(request: Any, context: Any) -> Any:
        if isinstance(request, Unreadable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(request.message()))
        return behavior(request, context)

    return answer


def _refusing_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream_async(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Unreadable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(request.message()))
            async for item in behavior(request, context):
                yield item

        return stream_async

    def stream(request: Any, context: Any) -> Iterator[Any]:
        if isinstance(request, Unreadable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, details(request.message()))
        yield from behavior(request, context)

    return stream
