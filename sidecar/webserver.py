"""An ASGI application served by uvicorn in a thread of its own, on a socket bound
when it is built (so a port 0 is known at once and a taken port fails then): what
the injector's webhook and the feedback service's HTTP endpoint run on. Needs the
``web`` extra."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from sidecar.settings import split_host_port


@dataclass
class WebServer:
    server: uvicorn.Server
    listener: socket.socket
    address: str
    stop_seconds: float
    _thread: threading.Thread | None = field(default=None)

    def start(self, name: str) -> None:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.listener]}, name=name
        )
        self._thread.start()

    def stop(self) -> None:
        """Finish the requests in flight (up to stop_seconds), then close."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(self.stop_seconds)
        self.listener.close()


def web_server(
    app: Any,
    listen: str,
    var: str,
    *,
    tls: ssl.SSLContext | None = None,
    keep_alive_seconds: float = 5.0,
    stop_seconds: float = 10.0,
    proxy_headers: bool = True,
) -> WebServer:
    """app on listen (HOST:PORT; var names its setting in errors), with TLS when tls
    is given. proxy_headers False keeps the connecting peer as the client address
    (uvicorn otherwise takes X-Forwarded-For from a loopback peer)."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        proxy_headers=proxy_headers,
        log_config=None,
        access_log=False,  # the applications log what they do
        timeout_keep_alive=int(keep_alive_seconds),
        timeout_graceful_shutdown=int(stop_seconds),
    )
    config.load()
    config.ssl = tls
    listener = _bind(listen, var)
    host = listen.rpartition(":")[0]
    return WebServer(
        uvicorn.Server(config), listener, f"{host}:{listener.getsockname()[1]}", stop_seconds
    )


def _bind(listen: str, var: str) -> socket.socket:
    host, port = split_host_port(listen, var)
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host.strip("[]"), port))
    listener.listen(128)
    return listener
