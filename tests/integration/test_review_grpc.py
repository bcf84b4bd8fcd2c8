"""The review queue's gRPC surface, served in-process on a loopback port: every RPC's
validation (status code, message naming the field), the per-item Submit answers,
the lifecycle over the wire, health and reflection."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.clock import FakeClock
from sidecar.escalation.messages import to_message
from sidecar.review.app import ReviewServer, build
from sidecar.review.config import ReviewConfig
from tests.escalations import escalation

pytestmark = pytest.mark.integration

Code = grpc.StatusCode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReviewServer]:
    config = ReviewConfig(listen="127.0.0.1:0", db=f"sqlite:{tmp_path / 'review.db'}")
    review = build(config, clock=FakeClock())
    review.start()
    yield review
    review.stop(grace=0)


@pytest.fixture
def stub(server: ReviewServer) -> Iterator[rpb_grpc.ReviewQueueStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield rpb_grpc.ReviewQueueStub(channel)


def message(escalation_id: str = "e1", **fields: Any) -> rpb.Escalation:
    return to_message(escalation(escalation_id, **fields))


def refusal(call: Callable[[], Any]) -> tuple[Code, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    error: Any = raised.value
    return error.code(), error.details()


INVALID = [
    ("Submit", rpb.SubmitRequest(), "escalations"),
    (
        "Submit",
        rpb.SubmitRequest(escalations=[message(f"e{i}") for i in range(1001)]),
        "escalations",
    ),
    ("List", rpb.ListRequest(limit=-1), "limit"),
    ("List", rpb.ListRequest(limit=1001), "limit"),
    ("List", rpb.ListRequest(state=9), "state"),  # type: ignore[arg-type]
    ("List", rpb.ListRequest(tier=9), "tier"),  # type: ignore[arg-type]
    ("List", rpb.ListRequest(model="m" * 129), "model"),
    ("Claim", rpb.ClaimRequest(), "reviewer"),
    ("Claim", rpb.ClaimRequest(reviewer="alice", lease_seconds=-1), "lease_seconds"),
    ("Claim", rpb.ClaimRequest(reviewer="alice", lease_seconds=86401), "lease_seconds"),
    ("Claim", rpb.ClaimRequest(reviewer="alice", lease_seconds=math.nan), "lease_seconds"),
    ("Resolve", rpb.ResolveRequest(reviewer="a", verdict=rpb.VERDICT_ACCEPT), "escalation_id"),
    ("Resolve", rpb.ResolveRequest(escalation_id="e1", verdict=rpb.VERDICT_ACCEPT), "reviewer"),
    ("Resolve", rpb.ResolveRequest(escalation_id="e1", reviewer="a"), "verdict"),
    ("Resolve", rpb.ResolveRequest(escalation_id="e1", reviewer="a", verdict=7), "verdict"),  # type: ignore[arg-type]
    (
        "Resolve",
        rpb.ResolveRequest(escalation_id="e1", reviewer="a", verdict=rpb.VERDICT_OVERRIDE),
        "corrected_class",
    ),
    (
        "Resolve",
        rpb.ResolveRequest(
            escalation_id="e1", reviewer="a", verdict=rpb.VERDICT_ACCEPT, corrected_label="c"
        ),
        "corrected_label",
    ),
    (
        "Resolve",
        rpb.ResolveRequest(
            escalation_id="e1", reviewer="a", verdict=rpb.VERDICT_OVERRIDE, corrected_class=-1
        ),
        "corrected_class",
    ),
    (
        "Resolve",
        rpb.ResolveRequest(
            escalation_id="e1", reviewer="a", verdict=rpb.VERDICT_ACCEPT, time_to_label_seconds=-2
        ),
        "time_to_label_seconds",
    ),
    ("Export", rpb.ExportRequest(resolved_since=-1), "resolved_since"),
    ("Export", rpb.ExportRequest(resolved_since=math.inf), "resolved_since"),
]


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    INVALID,
    ids=[f"{method}-{field}-{i}" for i, (method, _, field) in enumerate(INVALID)],
)
def test_invalid_requests_name_their_field(
    stub: rpb_grpc.ReviewQueueStub, method: str, request_message: Any, field: str
) -> None:
    """INVALID_ARGUMENT, the message starting with the offending field."""
    rpc = getattr(stub, method)

    def call() -> Any:
        answer = rpc(request_message, timeout=5)
        return list(answer) if method == "Export" else answer

    code, details = refusal(call)
    assert code == Code.INVALID_ARGUMENT
    assert details.startswith(f"{field}: "), details


def test_submit_answers_each_item(stub: rpb_grpc.ReviewQueueStub) -> None:
    """ACCEPTED, REJECTED naming the field (an undefined tier number too), DUPLICATE on resend."""
    unknown_tier = message("e3")
    unknown_tier.tier = 9  # type: ignore[assignment]
    batch = [message("e1"), message("e2", model=""), unknown_tier, message("e4", tier="")]
    first = stub.Submit(rpb.SubmitRequest(escalations=batch), timeout=5)
    again = stub.Submit(rpb.SubmitRequest(escalations=batch[:1]), timeout=5)
    status = rpb.SubmitResult.Status
    assert [(r.escalation_id, r.status) for r in first.results] == [
        ("e1", status.ACCEPTED),
        ("e2", status.REJECTED),
        ("e3", status.REJECTED),
        ("e4", status.REJECTED),
    ]
    assert [r.message.split(":")[0] for r in first.results] == ["", "model", "tier", "tier"]
    assert "9" in first.results[2].message
    assert [(r.escalation_id, r.status, r.message) for r in again.results] == [
        ("e1", status.DUPLICATE, "")
    ]


def test_claim_and_resolve_refusals(stub: rpb_grpc.ReviewQueueStub) -> None:
    """NOT_FOUND with nothing open or an unknown id; FAILED_PRECONDITION when not yours or
    resolved."""
    claim = rpb.ClaimRequest(reviewer="alice")

    def resolve(escalation_id: str, reviewer: str) -> Callable[[], Any]:
        request = rpb.ResolveRequest(
            escalation_id=escalation_id, reviewer=reviewer, verdict=rpb.VERDICT_ACCEPT
        )
        return lambda: stub.Resolve(request, timeout=5)

    assert refusal(lambda: stub.Claim(claim, timeout=5)) == (Code.NOT_FOUND, "no open item")
    stub.Submit(rpb.SubmitRequest(escalations=[message("e1"), message("e2")]), timeout=5)
    code, details = refusal(resolve("e9", "alice"))
    assert (code, details) == (Code.NOT_FOUND, "escalation_id 'e9': no such item")
    assert refusal(resolve("e1", "alice"))[0] == Code.FAILED_PRECONDITION
    stub.Claim(claim, timeout=5)
    code, details = refusal(resolve("e1", "bob"))
    assert (code, details) == (
        Code.FAILED_PRECONDITION,
        "escalation_id 'e1' is claimed by 'alice', not 'bob'",
    )
    resolve("e1", "alice")()
    code, details = refusal(resolve("e1", "alice"))
    assert code == Code.FAILED_PRECONDITION
    assert "already resolved" in details


def test_lifecycle_over_the_wire(stub: rpb_grpc.ReviewQueueStub) -> None:
    """Submit, List most urgent first, Claim, Resolve with an override, Export the label."""
    batch = [message("assisted"), message("primary", tier="HUMAN_PRIMARY", domain="us")]
    stub.Submit(rpb.SubmitRequest(escalations=batch), timeout=5)
    listed = stub.List(rpb.ListRequest(state=rpb.ITEM_STATE_OPEN), timeout=5)
    assert [(i.escalation.escalation_id, i.priority) for i in listed.items] == [
        ("primary", 0),
        ("assisted", 1),
    ]
    claimed = stub.Claim(rpb.ClaimRequest(reviewer="alice", lease_seconds=60), timeout=5).item
    assert (claimed.escalation.escalation_id, claimed.state, claimed.claimed_by) == (
        "primary",
        rpb.ITEM_STATE_CLAIMED,
        "alice",
    )
    assert claimed.lease_expires_at - claimed.received_at == 60
    resolved = stub.Resolve(
        rpb.ResolveRequest(
            escalation_id="primary",
            reviewer="alice",
            verdict=rpb.VERDICT_OVERRIDE,
            corrected_class=0,
            corrected_label="a",
            rationale="the amount is fine",
            time_to_label_seconds=9.0,
        ),
        timeout=5,
    ).item
    assert resolved.state == rpb.ITEM_STATE_RESOLVED
    assert (resolved.resolution.label_class, resolved.resolution.label) == (0, "a")
    (exported,) = stub.Export(rpb.ExportRequest(), timeout=5)
    assert exported.escalation == batch[1]
    assert exported.resolution == resolved.resolution
    only = stub.List(rpb.ListRequest(tier=dpb.TIER_HUMAN_ASSISTED), timeout=5).items
    assert [i.escalation.escalation_id for i in only] == ["assisted"]


def test_health_and_reflection(server: ReviewServer) -> None:
    """Health answers SERVING for the queue and the server; reflection names the service."""
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "hitl.v1.ReviewQueue"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        described = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "hitl.v1.ReviewQueue" in described
