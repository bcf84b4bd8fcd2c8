"""Real sidecar processes on loopback port 0, with real artefacts and policy files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from hitl_client.router import RouterClient
from sidecar.escalation.spool import read_unacked
from sidecar.review.client import ReviewClient
from sidecar.review.store import open_store as open_review_store
from tests.artefacts import policy_doc, temperature_artefact, write_policy
from tests.ports import free_port
from tests.reviewers import add_principals

pytestmark = pytest.mark.integration


@dataclass
class SidecarProcess:
    process: subprocess.Popen[bytes]
    address: str
    workdir: Path

    def client(self, **kw: Any) -> RouterClient:
        return RouterClient(self.address, **kw)

    def audit(self, count: int) -> list[dict[str, Any]]:
        """The audit records once count of them are on disk (they are flushed every 0.1 s)."""
        path = self.workdir / "state" / "audit.jsonl"
        wait_for(lambda: len(_jsonl(path)) >= count, 5.0, f"{count} audit records")
        return _jsonl(path)

    def escalations(self) -> list[dict[str, Any]]:
        """The escalations in the spool not yet delivered (all of them, with no sink)."""
        spool = self.workdir / "state" / "spool"
        return [json.loads(payload) for _, payload in read_unacked(spool)]

    def log(self) -> list[dict[str, Any]]:
        return _jsonl(self.workdir / "sidecar.log")

    def wait_serving(self, timeout: float = 20.0) -> None:
        with self.client() as client:
            wait_for(client.serving, timeout, "sidecar SERVING")

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def listening_address(
    process: subprocess.Popen[bytes], port_file: Path, log: Path, what: str
) -> str:
    """The address process wrote to port_file once listening; a process that exits
    first fails the test with its log, one that never writes it is killed."""
    try:
        wait_for(
            lambda: port_file.exists() or process.poll() is not None,
            30.0,
            f"the {what}'s port file",
        )
    except AssertionError:
        process.kill()
        raise
    if process.poll() is not None:
        raise AssertionError(f"{what} exited {process.returncode}: {log.read_text()}")
    return port_file.read_text()


def start_container(
    container: dict[str, Any], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """A pod's ``hitl`` container run here as the kubelet would run it: its command and
    args, in cwd, with its environment env and nothing else (but PATH); output to log."""
    assert container["command"][0] == "hitl"
    command = hitl_command(*container["command"][1:], *container.get("args", []))
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], **env},
            cwd=cwd,
        )


def start_sidecar(
    workdir: Path,
    policy: Path | None,
    *extra: str,
    env: dict[str, str] | None = None,
    listen: str = "127.0.0.1:0",
) -> SidecarProcess:
    """A sidecar on policy (a file), or on whatever extra says (--registry ...)."""
    port_file = workdir / "sidecar.addr"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "hitl", "sidecar"]
    command += ["--policy", str(policy)] if policy is not None else []
    command += ["--listen", listen, "--state-dir", str(workdir / "state")]
    command += ["--port-file", str(port_file), *extra]
    with (workdir / "sidecar.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HITL_POLICY_POLL_SECONDS": "0.1", **(env or {})},
        )
    address = listening_address(process, port_file, workdir / "sidecar.log", "sidecar")
    return SidecarProcess(process, address, workdir)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A policy with one 3-class model 'm' (T=1), thresholds 0.9 / 0.5."""
    sha = temperature_artefact(tmp_path / "cal.onnx")
    path = tmp_path / "policy.yaml"
    write_policy(path, policy_doc(sha))
    return path


@pytest.fixture
def sidecar(tmp_path: Path, policy_file: Path) -> Iterator[SidecarProcess]:
    running = start_sidecar(tmp_path, policy_file)
    running.wait_serving()
    yield running
    running.process.kill()
    running.process.wait()


# -- the review queue: ``hitl review serve`` as a real process ----------------------

HITL = Path(sys.executable).with_name("hitl")


def hitl_command(*args: str) -> list[str]:
    """The hitl command line (the venv's entry point, or python -m hitl without it)."""
    if HITL.exists():
        return [str(HITL), *args]
    return [sys.executable, "-m", "hitl", *args]


@dataclass
class ReviewProcess:
    process: subprocess.Popen[bytes]
    address: str
    workdir: Path
    tokens: dict[str, str]  # of tests.reviewers.PRINCIPALS, by name

    def client(self, who: str = "desk") -> ReviewClient:
        return ReviewClient(self.address, self.tokens[who])

    def sink(self) -> tuple[str, ...]:
        """The sidecar's flags that deliver to this queue, as its sidecar principal."""
        return review_sink(self.workdir, int(self.address.rpartition(":")[2]))

    def token_file(self, who: str) -> Path:
        path = self.workdir / f"{who}.token"
        path.write_text(self.tokens[who])
        return path

    def hitl(self, *args: str, who: str = "desk") -> subprocess.CompletedProcess[str]:
        """Run ``hitl review ARGS --target <this queue>`` as who; never raises on exit
        status."""
        return subprocess.run(
            hitl_command("review", *args, "--target", self.address),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "HITL_REVIEW_TOKEN": self.tokens.get(who, "unknown")},
        )

    def log(self) -> list[dict[str, Any]]:
        return _jsonl(self.workdir / "review.log")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; a queue still running after timeout has its threads' stacks
        dumped into its log (SIGUSR1), is killed, and the test fails showing them."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.process.kill()
            self.process.wait()
            tail = (self.workdir / "review.log").read_text()[-6000:]
            raise AssertionError(f"review queue ignored SIGTERM for {timeout} s:\n{tail}") from None


def prepare_review(workdir: Path, db: str = "") -> dict[str, str]:
    """The principals of tests.reviewers in a review queue's database (a SQLite file in
    workdir unless db), before the queue starts; the sidecar's token also goes to
    workdir/sidecar.token, for ``--review-token-file``. Their tokens by name."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = open_review_store(db or f"sqlite:{workdir / 'review.db'}")
    try:
        tokens = add_principals(store)
    finally:
        store.close()
    (workdir / "sidecar.token").write_text(tokens["sidecar-1"])
    return tokens


def review_sink(workdir: Path, port: int) -> tuple[str, ...]:
    """The sidecar's flags to deliver to the queue prepared in workdir on a loopback port."""
    return (
        "--sink",
        f"review://127.0.0.1:{port}",
        "--review-token-file",
        str(workdir / "sidecar.token"),
    )


def start_review(
    workdir: Path,
    *extra: str,
    db: str = "",
    listen: str = "127.0.0.1:0",
    tokens: dict[str, str] | None = None,
) -> ReviewProcess:
    """``hitl review serve`` on listen (a SQLite file in workdir unless db), with the
    principals of tests.reviewers (or, for a database another queue shares, the tokens
    it already has), once its port file says it is listening and health answers
    SERVING."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "review.addr"
    db = db or f"sqlite:{workdir / 'review.db'}"
    tokens = tokens or prepare_review(workdir, db)
    port_file.unlink(missing_ok=True)
    command = hitl_command("review", "serve", "--listen", listen, "--port-file", str(port_file))
    command += ["--db", db, *extra]
    with (workdir / "review.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    address = listening_address(process, port_file, workdir / "review.log", "review queue")
    running = ReviewProcess(process, address, workdir, tokens)
    with running.client() as client:
        wait_for(client.serving, 20.0, "review queue SERVING")
    return running


def start_review_console(workdir: Path, *extra: str) -> tuple[ReviewProcess, str]:
    """start_review in workdir/review with its web console on a free port (its session
    key a file in workdir), once the console listens: the process, the console's URL."""
    secret = workdir / "console.key"
    secret.write_text("s" * 48)
    port = free_port()
    running = start_review(
        workdir / "review",
        "--console-listen", f"127.0.0.1:{port}",
        "--console-secret-file", str(secret),
        *extra,
    )  # fmt: skip
    wait_for(
        lambda: any(e["event"] == "review.console_listening" for e in running.log()),
        10.0,
        "console",
    )
    return running, f"http://127.0.0.1:{port}"


@pytest.fixture
def review_queue(tmp_path: Path) -> Iterator[ReviewProcess]:
    """A review queue process on a loopback port 0 with its SQLite file in tmp_path/review."""
    running = start_review(tmp_path / "review")
    yield running
    running.process.kill()
    running.process.wait()


def reflection_v1_services(channel: grpc.Channel) -> set[str]:
    """The services grpc.reflection.v1 lists (its messages are v1alpha's on the wire)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        reflection_pb2.ServerReflectionRequest.SerializeToString,
        reflection_pb2.ServerReflectionResponse.FromString,
    )
    (answer,) = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    return {service.name for service in answer.list_services_response.service}
