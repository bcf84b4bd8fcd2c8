"""Escalations from a real sidecar process to real sinks, through faults: the sink
server restarted mid-stream, the sidecar killed with SIGKILL under load, a torn
record at the spool's tail. What the sidecar acknowledged must arrive exactly once
after dedupe; what it refused it must have answered UNAVAILABLE."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sidecar.client import RouterClient
from tests.integration.conftest import SidecarProcess, start_sidecar, wait_for
from tests.integration.test_sidecar_process import ok
from tests.natsserver import NatsServer

FAST_RETRY = {"HITL_FORWARD_MAX_BACKOFF_SECONDS": "1.5", "HITL_FORWARD_TIMEOUT_SECONDS": "2"}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class Load:
    """Route requests, a third of them escalated, until stopped; remembers what the
    sidecar answered."""

    address: str
    prefix: str
    acknowledged: dict[str, str] = field(default_factory=dict)  # request_id -> escalation_id
    sent: int = 0
    failed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with RouterClient(self.address, max_attempts=1, timeout=2.0) as client:
            while not self.stop.is_set():
                request_id = f"{self.prefix}-{self.sent:06d}"
                strength = 0.3 if self.sent % 3 == 0 else 8.0
                self.sent += 1
                try:
                    response = client.route(ok(request_id, strength=strength))
                except grpc.RpcError:
                    self.failed += 1
                    continue
                if response.escalation_id:
                    self.acknowledged[request_id] = response.escalation_id


def drained(running: SidecarProcess) -> None:
    wait_for(lambda: not running.escalations(), 30.0, "the spool to drain to the sink")


def route_escalations(running: SidecarProcess, prefix: str, count: int) -> list[str]:
    with running.client() as client:
        return [client.route(ok(f"{prefix}-{i}", strength=0.3)).escalation_id for i in range(count)]


def test_nats_restart_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, policy_file: Path, nats_server: NatsServer
) -> None:
    """100 escalations, the NATS server stopped, 100 more routed while it is down
    (the spool holds them), the server back: the stream holds all 200, once each,
    on the model's and tier's subject, with the escalation id as message id."""
    running = start_sidecar(
        tmp_path, policy_file, "--sink", nats_server.url, "--deployment", "restart-test",
        env=FAST_RETRY,
    )  # fmt: skip
    try:
        running.wait_serving()
        before = route_escalations(running, "before", 100)
        drained(running)
        nats_server.stop()
        during = route_escalations(running, "during", 100)
        time.sleep(2.0)  # the forwarder fails, backs off and opens its circuit
        assert len(running.escalations()) == 100
        nats_server.start()
        drained(running)
    finally:
        assert running.stop() == 0
    messages = nats_server.messages("HITL_RESTART-TEST")
    ids = [m["escalation_id"] for m in messages]
    assert sorted(ids) == sorted(before + during)
    assert all(m["_msg_id"] == m["escalation_id"] for m in messages)
    assert {m["_subject"] for m in messages} == {"hitl.restart-test.m.HUMAN_PRIMARY"}
    events = [e["event"] for e in running.log()]
    assert "forwarder.circuit_open" in events
    assert "forwarder.circuit_closed" in events


def test_sigkill_under_load_loses_nothing_acknowledged(
    tmp_path: Path, policy_file: Path, nats_server: NatsServer
) -> None:
    """The sidecar is killed with SIGKILL five times while a client routes at full
    speed, and restarted on the same state directory each time. Every escalation
    whose Route returned is in the stream exactly once; nothing else is."""
    args = ("--sink", nats_server.url, "--deployment", "kill-test")
    acknowledged: dict[str, str] = {}
    attempted: set[str] = set()
    recoveries: list[float] = []
    running = start_sidecar(tmp_path, policy_file, *args, env=FAST_RETRY)
    running.wait_serving()
    for cycle in range(5):
        load = Load(running.address, f"c{cycle}")
        sender = threading.Thread(target=load.run)
        sender.start()
        time.sleep(1.0)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait()
        load.stop.set()
        sender.join()
        acknowledged |= load.acknowledged
        attempted |= {f"c{cycle}-{i:06d}" for i in range(load.sent)}
        started = time.monotonic()
        running = start_sidecar(tmp_path, policy_file, *args, env=FAST_RETRY)
        running.wait_serving()
        recoveries.append(time.monotonic() - started)
    try:
        drained(running)
    finally:
        assert running.stop() == 0
    messages = nats_server.messages("HITL_KILL-TEST")
    delivered = [m["escalation_id"] for m in messages]
    assert len(delivered) == len(set(delivered)), "a duplicate passed the dedupe"
    assert set(acknowledged.values()) <= set(delivered)
    assert {m["request_id"] for m in messages} <= attempted
    assert len(acknowledged) > 100, f"too little load to prove anything: {len(acknowledged)}"
    print(
        f"\nSIGKILL x5: {len(acknowledged)} acknowledged escalations, {len(delivered)} "
        f"delivered once each; restart to SERVING {min(recoveries):.2f}-{max(recoveries):.2f} s"
    )


def test_torn_tail_is_cut_on_restart_and_the_rest_delivered(
    tmp_path: Path, policy_file: Path, nats_server: NatsServer
) -> None:
    """A half-written record at the spool's tail (a crash mid-write) is cut when the
    sidecar starts, logged with its size, and every whole record is delivered."""
    running = start_sidecar(tmp_path, policy_file)  # no sink: the spool keeps them
    running.wait_serving()
    ids = route_escalations(running, "torn", 20)
    running.process.send_signal(signal.SIGKILL)
    running.process.wait()
    segment = max((tmp_path / "state" / "spool").glob("*.seg"))
    with segment.open("ab") as tail:
        tail.write(b'\x40\x00\x00\x00\x12\x34\x56\x78{"escalation_id": "torn')
    running = start_sidecar(
        tmp_path, policy_file, "--sink", nats_server.url, "--deployment", "torn-test"
    )
    try:
        running.wait_serving()
        drained(running)
    finally:
        assert running.stop() == 0
    assert sorted(m["escalation_id"] for m in nats_server.messages("HITL_TORN-TEST")) == sorted(ids)
    cut = [e for e in running.log() if e["event"] == "spool.torn_tail_cut"]
    assert [e["bytes"] for e in cut] == [8 + len(b'{"escalation_id": "torn')]
