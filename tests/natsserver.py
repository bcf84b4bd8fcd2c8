"""A NATS server with JetStream of a test's own (the machine's /usr/sbin/nats-server,
or NATS_SERVER), on a free loopback port with its own store, so a test can stop and
restart it without touching the shared server. A test may give it a configuration
(TLS, authorization: ``tls_config``, ``token_config``, ``nkey_config``) and the
connect options its own reads need; ``tls_server`` starts one serving TLS only."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.certs import Authority
from tests.ports import free_port

BINARY = os.environ.get("NATS_SERVER", shutil.which("nats-server") or "/usr/sbin/nats-server")


class NatsServer:
    def __init__(
        self,
        workdir: Path,
        config: str = "",
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        """config: nats-server configuration text (the port, JetStream and store come
        from flags); connect_options: what messages() connects with."""
        if not Path(BINARY).exists():
            pytest.skip(f"no nats-server binary at {BINARY}")
        self.store = workdir / "nats-store"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._log = workdir / "nats.log"
        self._config = workdir / "nats.conf" if config else None
        if self._config is not None:
            self._config.write_text(config)
        self.connect_options = connect_options or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self._log.read_text() if self._log.exists() else ""

    def start(self) -> None:
        command = [BINARY, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        if self._config is not None:
            command += ["-c", str(self._config)]
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"nats-server did not listen on {self.port}: {self._log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def messages(self, stream: str) -> list[dict[str, Any]]:
        """Every message in stream, in order, as decoded JSON with its Nats-Msg-Id."""
        return asyncio.run(_messages(self.url, stream, self.connect_options))


@contextmanager
def tls_server(
    workdir: Path, authority: Authority, auth: str = "", **options: Any
) -> Iterator[NatsServer]:
    """A started nats-server serving TLS only, its certificate from authority, admitting
    whom auth (``token_config``...) says; its messages() connects over TLS with
    options (the credentials auth asks for)."""
    issued = authority.issue("nats", server=True)
    client_tls = ssl.create_default_context(cafile=str(authority.cert))
    server = NatsServer(
        workdir, tls_config(issued.cert, issued.key) + auth, {"tls": client_tls, **options}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_config(cert: Path, key: Path) -> str:
    """nats-server configuration serving TLS with cert and key (clients must use it)."""
    return f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n  timeout: 5\n}}\n'


def token_config(token: str) -> str:
    """nats-server configuration admitting only clients presenting token."""
    return f'authorization {{\n  token: "{token}"\n}}\n'


def nkey_config(public_key: str) -> str:
    """nats-server configuration admitting only the NKey user public_key."""
    return f'authorization {{\n  users: [ {{ nkey: "{public_key}" }} ]\n}}\n'


async def _messages(url: str, stream: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    import nats
    import orjson

    client = await nats.connect(url, **options)
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, seq)
            found.append(
                {
                    **orjson.loads(message.data or b"{}"),
                    "_msg_id": (message.headers or {}).get("Nats-Msg-Id"),
                    "_subject": message.subject,
                }
            )
        return found
    finally:
        await client.close()
