"""A NATS server with JetStream of a test's own (the machine's /usr/sbin/nats-server,
or NATS_SERVER), on a free loopback port with its own store, so a test can stop and
restart it without touching the shared server."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

BINARY = os.environ.get("NATS_SERVER", shutil.which("nats-server") or "/usr/sbin/nats-server")


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        if not Path(BINARY).exists():
            pytest.skip(f"no nats-server binary at {BINARY}")
        self.store = workdir / "nats-store"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._log = workdir / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [BINARY, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
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
        return asyncio.run(_messages(self.url, stream))


async def _messages(url: str, stream: str) -> list[dict[str, Any]]:
    import nats
    import orjson

    client = await nats.connect(url)
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
