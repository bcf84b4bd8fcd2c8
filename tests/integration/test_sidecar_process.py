"""The sidecar as a real process over gRPC: health, reflection, Route and its errors,
replay, batches, streams, hot reload, fallbacks, tracing, refusal and shutdown."""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import signal
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from hitl_client.router import AsyncRouterClient, route_request
from hitl_client.stubs.hitl.v1 import decision_pb2 as d
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc
from tests.artefacts import (
    confident_logits,
    naive_softmax_artefact,
    policy_doc,
    temperature_artefact,
    write_policy,
)
from tests.integration.conftest import (
    SidecarProcess,
    hitl_command,
    reflection_v1_services,
    start_sidecar,
    wait_for,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration


def ok(request_id: str = "r1", cls: int = 0, strength: float = 8.0, **kw: Any) -> pb.RouteRequest:
    return route_request(request_id, kw.pop("model", "m"), confident_logits(cls, strength), **kw)


def health_status(address: str, service: str = "hitl.v1.Router") -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


def test_serving_only_once_policy_loads(tmp_path: Path) -> None:
    """Without a policy: NOT_SERVING and degraded fallbacks; once the file appears: SERVING."""
    policy = tmp_path / "policy.yaml"
    running = start_sidecar(tmp_path, policy)
    try:
        assert health_status(running.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        with running.client() as client:
            early = client.route(ok("early"))
            assert (early.tier, early.reason, early.degraded) == (
                d.TIER_HUMAN_ASSISTED,
                d.REASON_FALLBACK_NO_POLICY,
                True,
            )
            write_policy(policy, policy_doc(temperature_artefact(tmp_path / "cal.onnx")))
            running.wait_serving()
            assert client.route(ok("late")).tier == d.TIER_AUTOMATED
    finally:
        assert running.stop() == 0


def test_health_listener_serves_health_and_not_the_router(tmp_path: Path) -> None:
    """--health-listen: NOT_SERVING there until the policy loads, then SERVING; Route
    is UNIMPLEMENTED there; on SIGTERM it answers NOT_SERVING while the Router drains."""
    policy = tmp_path / "policy.yaml"
    health_address = f"127.0.0.1:{free_port()}"
    running = start_sidecar(tmp_path, policy, "--health-listen", health_address)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    try:
        assert running.address != health_address  # the port file names the Router
        for service in ("", "hitl.v1.Router"):
            assert health_status(health_address, service) == not_serving
        write_policy(policy, policy_doc(temperature_artefact(tmp_path / "cal.onnx")))
        wait_for(lambda: health_status(health_address) == serving, 20, "SERVING on the health port")
        assert health_status(health_address, "") == serving
        with grpc.insecure_channel(health_address) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.RouterStub(channel).Route(ok("wrong-door"), timeout=2)
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "hitl.v1.Router" not in services
        assert "grpc.health.v1.Health" in services

        # An open RouteStream holds the drain open after SIGTERM; meanwhile the health
        # port keeps answering, NOT_SERVING, and the stream still gets its answers.
        batches: queue.Queue[pb.RouteBatchRequest | None] = queue.Queue()
        with grpc.insecure_channel(running.address) as channel:
            answers = iter(pb_grpc.RouterStub(channel).RouteStream(iter(batches.get, None)))
            batches.put(pb.RouteBatchRequest(requests=[ok("before")]))
            assert next(answers).results[0].response.tier == d.TIER_AUTOMATED
            running.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda: health_status(health_address) == not_serving,
                5,
                "NOT_SERVING on the health port after SIGTERM",
            )
            assert health_status(health_address, "") == not_serving
            batches.put(pb.RouteBatchRequest(requests=[ok("draining")]))
            assert next(answers).results[0].response.request_id == "draining"
            batches.put(None)
            assert list(answers) == []
        assert running.process.wait(timeout=20) == 0
    finally:
        running.stop()
    events = [e["event"] for e in running.log()]
    assert events.index("sidecar.stopping") < events.index("sidecar.stopped")
    (listening,) = [e for e in running.log() if e["event"] == "sidecar.listening"]
    assert listening["health_address"] == health_address


def test_reflection_lists_services(sidecar: SidecarProcess) -> None:
    """Server reflection, as v1alpha and as v1 (what current tools ask first), names
    the Router, Health and both reflection services."""
    with grpc.insecure_channel(sidecar.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        by_v1 = reflection_v1_services(channel)
    assert {
        "hitl.v1.Router",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= services
    assert by_v1 == services


def test_route_decides_audits_and_escalates(sidecar: SidecarProcess) -> None:
    """Confident: AUTOMATED. Unsure: HUMAN_PRIMARY with an escalation recorded on disk."""
    with sidecar.client() as client:
        sure = client.route(ok("sure", cls=1))
        unsure = client.route(ok("unsure", strength=0.3, input_ref="s3://b/k"))
    assert (sure.tier, sure.predicted_label, sure.policy_revision) == (d.TIER_AUTOMATED, "dog", 1)
    assert sure.calibration_version == "t-v1"
    assert unsure.tier == d.TIER_HUMAN_PRIMARY
    assert unsure.escalation_id
    escalations = sidecar.escalations()
    assert [e["escalation_id"] for e in escalations] == [unsure.escalation_id]
    assert escalations[0]["input_ref"] == "s3://b/k"
    assert [r["request_id"] for r in sidecar.audit(2)] == ["sure", "unsure"]


BAD_REQUESTS = [
    (route_request("", "m", [1, 2, 3]), "request_id"),
    (route_request("r" * 200, "m", [1, 2, 3]), "request_id"),
    (route_request("x", "nope", [1, 2, 3]), "model"),
    (route_request("x", "m", [1, 2]), "logits"),
    (route_request("x", "m", []), "logits"),
    (route_request("x", "m", [1, float("nan"), 3]), "logits"),
    (route_request("x", "m", [1, float("inf"), 3]), "logits"),
    (route_request("x", "m", [0.5, 0.6, 0.7], probabilities=True), "logits"),
    (
        route_request("x", "m", [1, 2, 3], string_attributes={f"k{i}": "v" for i in range(65)}),
        "string_attributes",
    ),
    (
        route_request("x", "m", [1, 2, 3], string_attributes={"k": "v" * 5000}),
        "string_attributes['k']",
    ),
    (
        route_request("x", "m", [1, 2, 3], numeric_attributes={"n": float("nan")}),
        "numeric_attributes['n']",
    ),
    (route_request("x", "m", [1, 2, 3], context={"k": "v" * 20_000}), "context"),
    (pb.RouteRequest(request_id="x", model="m", logits=[1, 2, 3], input_kind=7), "input_kind"),  # type: ignore[arg-type]
]


def test_every_bad_input_is_named_and_server_keeps_serving(sidecar: SidecarProcess) -> None:
    """Each bad input gets INVALID_ARGUMENT naming its field; nothing is audited for it."""
    with sidecar.client() as client:
        for request, field in BAD_REQUESTS:
            with pytest.raises(grpc.RpcError) as raised:
                client.route(request)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert str(raised.value.details()).startswith(f"{field}:"), raised.value.details()
        assert client.route(ok("after")).tier == d.TIER_AUTOMATED
    assert [r["request_id"] for r in sidecar.audit(1)] == ["after"]


def test_replay_and_conflict(sidecar: SidecarProcess) -> None:
    """A resend gets the identical response and no second escalation; a reuse conflicts."""
    with sidecar.client() as client:
        first = client.route(ok("dup", strength=0.3))
        assert client.route(ok("dup", strength=0.3)) == first
        with pytest.raises(grpc.RpcError) as raised:
            client.route(ok("dup", cls=2))
    assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert str(raised.value.details()).startswith("request_id:")
    assert len(sidecar.escalations()) == 1


def test_batch_answers_each_item(sidecar: SidecarProcess) -> None:
    """RouteBatch: per-item results in order; a bad item names requests[i]; empty is refused."""
    with sidecar.client() as client:
        results = client.route_batch(
            [ok("b0"), route_request("b1", "m", [1.0]), ok("b2", strength=0.2)]
        )
        assert results[0].response.tier == d.TIER_AUTOMATED
        assert results[1].WhichOneof("result") == "error"
        assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert results[1].error.request_id == "b1"
        assert results[1].error.message.startswith("requests[1].logits:")
        assert results[2].response.tier == d.TIER_HUMAN_PRIMARY
        with pytest.raises(grpc.RpcError) as raised:
            client.route_batch([])
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_answers_every_batch_in_order(sidecar: SidecarProcess) -> None:
    """RouteStream: one response per inbound batch, in order, item errors inline."""

    async def run() -> list[list[pb.RouteResult]]:
        async def batches() -> AsyncIterator[Sequence[pb.RouteRequest]]:
            for i in range(20):
                yield [ok(f"s{i}-{j}", cls=j % 3) for j in range(5)] + [
                    route_request(f"bad{i}", "m", [])
                ]

        async with AsyncRouterClient(sidecar.address) as client:
            return [results async for results in client.route_stream(batches())]

    responses = asyncio.run(run())
    assert len(responses) == 20
    for i, results in enumerate(responses):
        assert [r.response.request_id for r in results[:5]] == [f"s{i}-{j}" for j in range(5)]
        assert results[5].error.message.startswith("requests[5].logits")


def test_hot_reload_and_bad_reload(sidecar: SidecarProcess, tmp_path: Path) -> None:
    """A new valid file changes decisions; an invalid one is logged and the old one stays."""
    sha = temperature_artefact(tmp_path / "cal.onnx")
    strict = policy_doc(sha, thresholds={"t_high": 0.9999, "t_low": 0.5})
    strict["revision"] = 2
    write_policy(tmp_path / "policy.yaml", strict)
    probes = itertools.count()
    with sidecar.client() as client:
        wait_for(
            lambda: client.route(ok(f"probe-{next(probes)}")).policy_revision == 2, 10, "revision 2"
        )
        assert client.route(ok("after-swap")).tier == d.TIER_HUMAN_ASSISTED
        broken = policy_doc(sha, thresholds={"t_high": 2.0, "t_low": 0.5})
        broken["revision"] = 3
        write_policy(tmp_path / "policy.yaml", broken)
        wait_for(
            lambda: any(e["event"] == "policy.rejected" for e in sidecar.log()), 10, "rejection"
        )
        kept = client.route(ok("kept"))
    assert kept.policy_revision == 2
    rejected = next(e for e in sidecar.log() if e["event"] == "policy.rejected")
    assert "models.m.thresholds.t_high" in rejected["error"]


def test_policy_with_tampered_calibrator_is_not_loaded(
    sidecar: SidecarProcess, tmp_path: Path
) -> None:
    """A new policy whose artefact does not match its sha256 is refused; routing goes on."""
    temperature_artefact(tmp_path / "other.onnx", temperature=3.0)
    doc = policy_doc("f" * 64, path="other.onnx")
    doc["revision"] = 2
    write_policy(tmp_path / "policy.yaml", doc)
    wait_for(lambda: any(e["event"] == "policy.rejected" for e in sidecar.log()), 10, "rejection")
    with sidecar.client() as client:
        assert client.route(ok("still")).policy_revision == 1
    assert health_status(sidecar.address) == health_pb2.HealthCheckResponse.SERVING


def test_trace_context_is_continued(sidecar: SidecarProcess) -> None:
    """The caller's W3C traceparent becomes the parent: its trace id is in audit and escalation."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with grpc.insecure_channel(sidecar.address) as channel:
        from hitl_client.stubs.hitl.v1 import router_pb2_grpc

        router_pb2_grpc.RouterStub(channel).Route(
            ok("traced", strength=0.3),
            metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),),
            timeout=2,
        )
    (record,) = sidecar.audit(1)
    assert record["trace_id"] == trace_id
    assert record["span_id"] not in ("", "00f067aa0ba902b7")
    assert sidecar.escalations()[0]["trace_id"] == trace_id


def test_non_finite_calibrator_output_falls_back(tmp_path: Path) -> None:
    """A graph that overflows to NaN on large logits gives FALLBACK_NON_FINITE, not AUTOMATED."""
    sha = naive_softmax_artefact(tmp_path / "naive.onnx")
    write_policy(tmp_path / "policy.yaml", policy_doc(sha, path="naive.onnx", version="naive-v1"))
    running = start_sidecar(tmp_path, tmp_path / "policy.yaml")
    try:
        running.wait_serving()
        with running.client() as client:
            normal = client.route(ok("small"))
            overflow = client.route(route_request("big", "m", [500.0, 0.0, 0.0]))
        assert normal.tier == d.TIER_AUTOMATED
        assert (overflow.tier, overflow.reason, overflow.degraded) == (
            d.TIER_HUMAN_ASSISTED,
            d.REASON_FALLBACK_NON_FINITE,
            True,
        )
        assert [e["request_id"] for e in running.escalations()] == ["big"]
    finally:
        running.stop()


def test_stale_policy_falls_back(tmp_path: Path) -> None:
    """A policy older than its max age is still loaded but every answer is degraded."""
    doc = policy_doc(temperature_artefact(tmp_path / "cal.onnx"))
    doc.update(issued_at="2020-01-01T00:00:00Z", max_age_seconds=60)
    write_policy(tmp_path / "policy.yaml", doc)
    running = start_sidecar(tmp_path, tmp_path / "policy.yaml")
    try:
        running.wait_serving()
        with running.client() as client:
            response = client.route(ok("old"))
        assert (response.tier, response.reason) == (
            d.TIER_HUMAN_ASSISTED,
            d.REASON_FALLBACK_STALE_POLICY,
        )
    finally:
        running.stop()


def test_full_disk_refuses_escalations_not_answers(tmp_path: Path, policy_file: Path) -> None:
    """With the spool's segment on a full disk (/dev/full answers every write with
    ENOSPC): escalations get UNAVAILABLE, automated answers still flow, and the
    refusal is logged."""
    spool = tmp_path / "state" / "spool"
    spool.mkdir(parents=True)
    (spool / f"{0:020d}.seg").symlink_to("/dev/full")
    running = start_sidecar(tmp_path, policy_file)
    try:
        running.wait_serving()
        with running.client(max_attempts=1) as client:
            with pytest.raises(grpc.RpcError) as raised:
                client.route(ok("needs-review", strength=0.3))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "escalation not recorded" in str(raised.value.details())
            assert client.route(ok("automated")).tier == d.TIER_AUTOMATED
        assert any(e["event"] == "escalation.refused" for e in running.log())
        assert [r["request_id"] for r in running.audit(1)] == ["automated"]
    finally:
        running.stop()


def test_full_disk_under_the_audit_log(tmp_path: Path, policy_file: Path) -> None:
    """With the audit log on a full disk, Route answers as before; the failure is
    logged once, not at every retry, the records held show in the metrics, and a
    stop says how many were never written and exits cleanly."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "audit.jsonl").symlink_to("/dev/full")
    port = free_port()
    running = start_sidecar(tmp_path, policy_file, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        running.wait_serving()
        with running.client() as client:
            for i in range(5):
                assert client.route(ok(f"a{i}")).tier == d.TIER_AUTOMATED
            assert client.route(ok("review", strength=0.3)).escalation_id
        wait_for(lambda: _sample(port, "hitl_audit_write_failures_total") >= 3, 5.0, "retries")
        assert _sample(port, "hitl_audit_pending_bytes") > 0
        assert _sample(port, "hitl_audit_dropped_total") == 0
    finally:
        assert running.stop() == 0
    events = running.log()
    assert [e["event"] for e in events].count("audit.write_failed") == 1
    (unwritten,) = [e for e in events if e["event"] == "audit.unwritten"]
    assert unwritten["records"] == 6
    assert len(running.escalations()) == 1  # the spool is another file, and took it


def _sample(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in the scrape")


def test_unix_socket_and_graceful_sigterm(tmp_path: Path, policy_file: Path) -> None:
    """The sidecar serves on a Unix socket and exits 0 on SIGTERM, logging its stop."""
    socket_path = tmp_path / "hitl.sock"
    running = start_sidecar(tmp_path, policy_file, listen=f"unix:{socket_path}")
    assert running.address == f"unix:{socket_path}"
    running.wait_serving()
    with running.client() as client:
        assert client.route(ok("via-uds")).tier == d.TIER_AUTOMATED
    assert running.stop() == 0
    events = [e["event"] for e in running.log()]
    assert events.index("sidecar.stopping") < events.index("sidecar.stopped")


def test_prometheus_metrics(tmp_path: Path, policy_file: Path) -> None:
    """The scrape endpoint exposes decisions, latency, the policy revision and the
    spool."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = start_sidecar(tmp_path, policy_file, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        running.wait_serving()
        with running.client() as client:
            client.route(ok("m1"))
            client.route(ok("m2", strength=0.3))
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        running.stop()
    samples = {
        (sample.name, _labels(sample.labels)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    decided = (("arm", ""), ("domain", "default"), ("model", "m"), ("reason", "THRESHOLD"))
    assert samples["hitl_route_decisions_total", (*decided, ("tier", "AUTOMATED"))] == 1
    assert samples["hitl_route_decisions_total", (*decided, ("tier", "HUMAN_PRIMARY"))] == 1
    escalated = (("model", "m"), ("result", "recorded"), ("tier", "HUMAN_PRIMARY"))
    assert samples["hitl_escalations_total", escalated] == 1
    assert samples["hitl_route_duration_milliseconds_count", (("method", "Route"),)] == 2
    assert samples["hitl_policy_revision", ()] == 1
    assert samples["hitl_calibration_info", (("model", "m"), ("version", "t-v1"))] == 1
    # No sink: the escalation waits in the spool, and the spool says so.
    assert samples["hitl_spool_records", ()] == 1
    assert samples["hitl_spool_bytes", ()] > 0
    assert samples["hitl_spool_oldest_age_seconds", ()] >= 0
    assert samples["hitl_dead_letter_records", ()] == 0


def _labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if not k.startswith("otel_scope")))


def test_hitl_route_sends_every_field_typed(sidecar: SidecarProcess) -> None:
    """hitl route: attributes typed by their flag (a zip code stays a string), input_ref,
    context and probabilities reach the sidecar; bad arguments exit 2 with a usage
    message, never a traceback."""
    common = ["route", "--target", sidecar.address, "--model", "m", "--request-id", "cli-1"]
    sent = subprocess.run(
        hitl_command(
            *common, "--probabilities", "0.98,0.01,0.01", "--str", "zip=02139",
            "--num", "amount=12.5", "--input-ref", "s3://in/cli-1", "--context", "who=cli",
        ),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["requestId"] == "cli-1"
    (record,) = [r for r in sidecar.audit(1) if r.get("request_id") == "cli-1"]
    assert record["string_attributes"] == {"zip": "02139"}
    assert record["numeric_attributes"] == {"amount": 12.5}
    assert record["input_kind"] == "PROBABILITIES"
    for bad, message in [
        (["--logits", "a,b"], "is not comma-separated numbers"),
        (["--logits", "1,2", "--str", "noequals"], "is not NAME=VALUE"),
        (["--logits", "1,2", "--num", "zip=abc"], "'abc' is not a number"),
    ]:
        refused = subprocess.run(
            hitl_command(*common, *bad), capture_output=True, text=True, check=False
        )
        assert refused.returncode == 2
        assert message in refused.stderr
        assert "Traceback" not in refused.stderr
