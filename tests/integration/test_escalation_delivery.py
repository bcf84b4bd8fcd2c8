"""Escalations from a real sidecar process to real sinks, through faults: the sink
server restarted mid-stream, the sidecar killed with SIGKILL under load, a torn
record at the spool's tail. What the sidecar acknowledged must arrive exactly once
after dedupe; what it refused it must have answered UNAVAILABLE."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import orjson
import pytest

from hitl_client.router import RouterClient
from sidecar.escalation.spool import Spool, read_unacked
from tests.escalations import escalation
from tests.integration.conftest import (
    ReviewProcess,
    SidecarProcess,
    hitl_command,
    prepare_review,
    review_sink,
    start_review,
    start_sidecar,
    wait_for,
)
from tests.integration.test_sidecar_process import ok
from tests.natsserver import NatsServer
from tests.ports import free_port

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
    spool = tmp_path / "state" / "spool"
    segment = max(spool.glob("*.seg"))
    *_, (end, _) = read_unacked(spool)
    with segment.open("r+b") as tail:  # after the last record, over the zeros laid ahead
        tail.seek(end - int(segment.stem))
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


def test_review_queue_down_for_a_long_stretch_then_back_loses_nothing(
    tmp_path: Path, policy_file: Path
) -> None:
    """The sidecar starts with its review queue down and stays so while 300
    escalations are routed and the forwarder fails, backs off and opens its circuit
    again and again; the queue comes up on its address and receives all of them,
    once each."""
    port = free_port()
    tokens = prepare_review(tmp_path / "review")
    running = start_sidecar(
        tmp_path, policy_file, *review_sink(tmp_path / "review", port), env=FAST_RETRY
    )
    try:
        running.wait_serving()
        ids = route_escalations(running, "outage", 300)
        time.sleep(6.0)
        assert len(running.escalations()) == 300
        queue = start_review(tmp_path / "review", listen=f"127.0.0.1:{port}", tokens=tokens)
        try:
            drained(running)
            with queue.client() as client:
                items = client.list_items(limit=1000)
        finally:
            queue.stop()
    finally:
        assert running.stop() == 0
    assert sorted(item.escalation_id for item in items) == sorted(ids)
    assert sum(e["event"] == "forwarder.circuit_open" for e in running.log()) >= 2


def test_full_spool_budget_refuses_and_loses_nothing_acknowledged(
    tmp_path: Path, policy_file: Path
) -> None:
    """With the sink down and a 16 KiB spool budget, escalations are refused with
    UNAVAILABLE once the budget is used, automated answers still flow, and every
    escalation acknowledged before that reaches the queue when it comes up; then
    escalations are accepted again."""
    port = free_port()
    tokens = prepare_review(tmp_path / "review")
    running = start_sidecar(
        tmp_path, policy_file, *review_sink(tmp_path / "review", port),
        env={**FAST_RETRY, "HITL_SPOOL_BUDGET_BYTES": "16384"},
    )  # fmt: skip
    acknowledged: list[str] = []
    try:
        running.wait_serving()
        refusal: grpc.RpcError | None = None
        with running.client(max_attempts=1) as client:
            for i in range(200):
                try:
                    acknowledged.append(client.route(ok(f"full-{i}", strength=0.3)).escalation_id)
                except grpc.RpcError as exc:
                    refusal = exc
                    break
            assert client.route(ok("automated")).escalation_id == ""
        assert refusal is not None, "the budget never filled"
        assert refusal.code() == grpc.StatusCode.UNAVAILABLE
        assert "spool budget" in str(refusal.details())
        queue = start_review(tmp_path / "review", listen=f"127.0.0.1:{port}", tokens=tokens)
        try:
            drained(running)
            with running.client() as client:
                again = client.route(ok("after", strength=0.3)).escalation_id
            wait_for(lambda: not running.escalations(), 10.0, "the last escalation delivered")
            with queue.client() as client:
                received = {item.escalation_id for item in client.list_items(limit=1000)}
        finally:
            queue.stop()
    finally:
        assert running.stop() == 0
    assert 10 < len(acknowledged) < 200
    assert received == {*acknowledged, again}
    refused = [e for e in running.log() if e["event"] == "escalation.refused"]
    assert len(refused) == 1
    assert "spool budget" in refused[0]["error"]


def test_dead_letters_are_listed_and_replayed_from_the_cli(
    tmp_path: Path, policy_file: Path, review_queue: ReviewProcess
) -> None:
    """A spooled record the queue refuses for good (no model) and one no queue
    message can hold (a tier this version does not know) are dead-lettered with
    their reasons while the rest is delivered; `hitl escalations dead-letters` shows
    them and `replay`, with the sidecar running, sends them through again."""
    spool = Spool(tmp_path / "state" / "spool")
    spool.append(orjson.dumps(escalation("no-model", model="").to_dict()))
    spool.append(orjson.dumps(escalation("new-tier", tier="HUMAN_LATER").to_dict()))
    spool.append(orjson.dumps(escalation("fine").to_dict()))
    spool.close()
    running = start_sidecar(tmp_path, policy_file, *review_queue.sink())
    state = str(tmp_path / "state")
    try:
        running.wait_serving()
        drained(running)
        listed = escalations_cli("dead-letters", "--state-dir", state)
        letters = {
            letter["escalation"]["escalation_id"]: (letter["sink"], letter["reason"])
            for letter in map(json.loads, listed.splitlines())
        }
        assert letters.keys() == {"no-model", "new-tier"}
        assert letters["no-model"][0] == "review-queue"
        assert letters["no-model"][1].startswith("model")
        assert letters["new-tier"][1].startswith(
            "not an escalation message: KeyError('HUMAN_LATER')"
        )
        assert json.loads(escalations_cli("status", "--state-dir", state))["dead_letters"] == 2
        assert "replay" in escalations_cli("replay", "--state-dir", state)
        wait_for(
            lambda: any(e["event"] == "escalation.dead_letters_replayed" for e in running.log()),
            10.0,
            "the running forwarder to replay",
        )
        drained(running)
        wait_for(
            lambda: sum(e["event"] == "escalation.dead_lettered" for e in running.log()) == 4,
            10.0,
            "the replayed records refused again",
        )
    finally:
        assert running.stop() == 0
    with review_queue.client() as client:
        assert [i.escalation_id for i in client.list_items()] == ["fine"]


def escalations_cli(*args: str) -> str:
    result = subprocess.run(
        hitl_command("escalations", *args), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
