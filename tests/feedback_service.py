"""A feedback service process for tests: principals made with its CLI, then
``hitl feedback serve`` on a loopback port 0, once health answers SERVING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sidecar.feedback.client import FeedbackClient
from tests.integration.conftest import hitl_command, listening_address, wait_for
from tests.ports import free_port

# A principal of each role, by name.
PRINCIPALS = {
    "app": ("client",),
    "sidecar-1": ("sidecar",),
    "queue": ("review",),
    "ops": ("viewer",),
    "analyst": ("exporter",),
}


@dataclass
class FeedbackProcess:
    process: subprocess.Popen[bytes]
    address: str
    tokens: dict[str, str]
    http_address: str = ""  # with start(http=True)

    def client(self, who: str) -> FeedbackClient:
        return FeedbackClient(self.address, self.tokens[who])


def add_principals(db: str, principals: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """principals (name: roles) made with ``hitl feedback principal add``; their
    tokens by name."""
    tokens = {}
    for name, roles in principals.items():
        flags = [flag for role in roles for flag in ("--role", role)]
        made = subprocess.run(
            hitl_command("feedback", "principal", "add", name, *flags, "--db", db),
            capture_output=True,
            check=True,
            text=True,
        )
        tokens[name] = json.loads(made.stdout)["token"]
    return tokens


def start(
    workdir: Path,
    db: str,
    tokens: dict[str, str],
    *extra: str,
    http: bool = False,
    env: Mapping[str, str] | None = None,
) -> FeedbackProcess:
    """The service on db with extra flags (and an HTTP port with http; env added to
    its environment), SERVING."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "feedback.addr"
    port_file.unlink(missing_ok=True)
    command = hitl_command(
        "feedback", "serve", "--listen", "127.0.0.1:0", "--db", db, "--port-file", str(port_file)
    )
    command += extra
    http_address = f"127.0.0.1:{free_port()}" if http else ""
    if http_address:
        command += ["--http-listen", http_address]
    with (workdir / "feedback.log").open("ab") as log:
        environment = {**os.environ, **env} if env else None
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    address = listening_address(process, port_file, workdir / "feedback.log", "feedback service")
    running = FeedbackProcess(process, address, tokens, http_address)
    with FeedbackClient(running.address) as client:
        wait_for(client.serving, 20.0, "the feedback service SERVING")
    return running


def stop(running: FeedbackProcess, workdir: Path | None = None) -> None:
    """SIGTERM, and a clean exit (the service's log in the message when not)."""
    running.process.send_signal(signal.SIGTERM)
    try:
        code = running.process.wait(60)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()
        log = (workdir / "feedback.log").read_text()[-4000:] if workdir else ""
        raise AssertionError(f"the feedback service did not stop on SIGTERM: {log}") from None
    assert code == 0
