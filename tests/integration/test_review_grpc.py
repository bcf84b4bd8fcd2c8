"""The review queue's gRPC surface, served in-process on a loopback port: every RPC's
validation (status code, message naming the field), the per-item Submit answers,
the lifecycle over the wire, health and reflection; and who may call it: every call
authenticated (a bearer token, or a client certificate under mTLS) and authorised by
role, on SQLite and PostgreSQL, in the clear and over TLS."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import review_pb2 as rpb
from hitl_client.stubs.hitl.v1 import review_pb2_grpc as rpb_grpc
from sidecar.clock import FakeClock
from sidecar.escalation.messages import to_message
from sidecar.review.app import ReviewServer, build
from sidecar.review.config import ReviewConfig
from tests.certs import Authority
from tests.escalations import escalation
from tests.integration.conftest import reflection_v1_services
from tests.postgres import dsn_for, fresh_schema
from tests.reviewers import add_principals, with_token
from tests.unit.review.conftest import points

pytestmark = pytest.mark.integration

Code = grpc.StatusCode


@contextmanager
def served(tmp_path: Path, backend: str = "sqlite", **settings: Any) -> Iterator[Served]:
    """A queue in process on backend, with PRINCIPALS; settings are ReviewConfig's."""
    with ExitStack() as stack:
        if backend == "sqlite":
            db = f"sqlite:{tmp_path / 'review.db'}"
        else:
            db = dsn_for(stack.enter_context(fresh_schema()))
        config = ReviewConfig(listen="127.0.0.1:0", db=db, **settings)
        review = build(config, clock=FakeClock(), metric_readers=[reader := InMemoryMetricReader()])
        tokens = add_principals(review.queue.store)
        review.start()
        try:
            yield Served(review, tokens, reader)
        finally:
            review.stop(grace=0)


@dataclass
class Served:
    server: ReviewServer
    tokens: dict[str, str]
    reader: InMemoryMetricReader

    def stub(
        self, who: str | None, channel: grpc.Channel | None = None
    ) -> rpb_grpc.ReviewQueueStub:
        """A stub calling as who (None: without credentials)."""
        channel = channel or grpc.insecure_channel(self.server.address)
        if who is not None:
            channel = with_token(channel, self.tokens[who])
        return rpb_grpc.ReviewQueueStub(channel)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReviewServer]:
    with served(tmp_path) as running:
        yield running.server


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[rpb_grpc.ReviewQueueStub]:
    """Calls as "desk": sidecar, lead and exporter, so every RPC is allowed."""
    with served(tmp_path) as running:
        yield running.stub("desk")


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
    ("Claim", rpb.ClaimRequest(reviewer="alice", lease_seconds=-1), "lease_seconds"),
    ("Claim", rpb.ClaimRequest(reviewer="alice", lease_seconds=86401), "lease_seconds"),
    ("Claim", rpb.ClaimRequest(reviewer="alice", lease_seconds=math.nan), "lease_seconds"),
    ("Resolve", rpb.ResolveRequest(reviewer="a", verdict=rpb.VERDICT_ACCEPT), "escalation_id"),
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
    (
        "Resolve",
        rpb.ResolveRequest(
            escalation_id="e1", reviewer="a", verdict=rpb.VERDICT_ACCEPT, evidence="[1, 2]"
        ),
        "evidence",
    ),
    ("Release", rpb.ReleaseRequest(reviewer="a"), "escalation_id"),
    ("Export", rpb.ExportRequest(resolved_since=-1), "resolved_since"),
    ("Export", rpb.ExportRequest(resolved_since=math.inf), "resolved_since"),
    ("BulkAccept", rpb.BulkAcceptRequest(min_confidence=0.9), "model"),
    ("BulkAccept", rpb.BulkAcceptRequest(model="m"), "min_confidence"),
    ("BulkAccept", rpb.BulkAcceptRequest(model="m", min_confidence=1.5), "min_confidence"),
    (
        "BulkAccept",
        rpb.BulkAcceptRequest(model="m", min_confidence=math.nan),
        "min_confidence",
    ),
    ("BulkAccept", rpb.BulkAcceptRequest(model="m", min_confidence=0.9, limit=1001), "limit"),
    ("BulkAccept", rpb.BulkAcceptRequest(model="m", min_confidence=0.9, tier=9), "tier"),  # type: ignore[arg-type]
    ("Revert", rpb.RevertRequest(reason="wrong"), "escalation_id"),
    ("Revert", rpb.RevertRequest(escalation_id="e1"), "reason"),
    ("Revert", rpb.RevertRequest(escalation_id="e1", reason="x" * 1001), "reason"),
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
        assert "hitl.v1.ReviewQueue" in reflection_v1_services(channel)


# -- who may call it -------------------------------------------------------------------

CALLS: dict[str, Callable[[rpb_grpc.ReviewQueueStub], Any]] = {
    "Submit": lambda s: s.Submit(rpb.SubmitRequest(escalations=[message("x1")]), timeout=5),
    "List": lambda s: s.List(rpb.ListRequest(), timeout=5),
    "Claim": lambda s: s.Claim(rpb.ClaimRequest(), timeout=5),
    "Resolve": lambda s: s.Resolve(
        rpb.ResolveRequest(escalation_id="x1", verdict=rpb.VERDICT_ACCEPT), timeout=5
    ),
    "Release": lambda s: s.Release(rpb.ReleaseRequest(escalation_id="x1"), timeout=5),
    "Export": lambda s: list(s.Export(rpb.ExportRequest(), timeout=5)),
    "BulkAccept": lambda s: s.BulkAccept(
        rpb.BulkAcceptRequest(model="m", min_confidence=0.9), timeout=5
    ),
    "Revert": lambda s: s.Revert(rpb.RevertRequest(escalation_id="x1", reason="r"), timeout=5),
}
# Who may call each method (anyone else is PERMISSION_DENIED).
ALLOWED = {
    "Submit": {"sidecar-1", "desk"},
    "List": {"viewer", "lead", "desk"},
    "Claim": {"alice", "bob", "lead", "desk"},
    "Resolve": {"alice", "bob", "lead", "desk"},
    "Release": {"alice", "bob", "lead", "desk"},
    "Export": {"exporter", "lead", "desk"},
    "BulkAccept": {"lead", "desk"},
    "Revert": {"lead", "desk"},
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_call_is_authenticated_and_authorised(tmp_path: Path, backend: str) -> None:
    """No token or an unknown one: UNAUTHENTICATED; a role that does not allow the
    method: PERMISSION_DENIED naming the roles it needs; each refusal counted."""
    with served(tmp_path, backend) as running:
        running.tokens["stranger"] = "not-a-token"

        def as_(who: str | None, method: str) -> Callable[[], Any]:
            return lambda: CALLS[method](running.stub(who))

        for method in CALLS:
            assert refusal(as_(None, method))[0] == Code.UNAUTHENTICATED
            assert refusal(as_("stranger", method))[0] == Code.UNAUTHENTICATED
            for who in sorted(set(running.tokens) - ALLOWED[method] - {"stranger"}):
                code, details = refusal(as_(who, method))
                assert code == Code.PERMISSION_DENIED, (method, who)
                assert f"{who} (roles: " in details
                assert f"may not call {method}" in details
        calls = points(running.reader, "hitl.review.calls")
        assert calls[frozenset({("method", "Submit"), ("outcome", "UNAUTHENTICATED")})] == 2
        assert calls[frozenset({("method", "Export"), ("outcome", "PERMISSION_DENIED")})] == 4


def test_the_reviewer_is_who_the_credential_says(tmp_path: Path) -> None:
    """A claim and a verdict are the caller's own; naming another reviewer is refused
    unless the caller is a lead, whose verdict for the holder records it as acting."""
    with served(tmp_path) as running:
        running.stub("sidecar-1").Submit(
            rpb.SubmitRequest(escalations=[message("e1"), message("e2")]), timeout=5
        )
        alice, lead = running.stub("alice"), running.stub("lead")
        claimed = alice.Claim(rpb.ClaimRequest(), timeout=5).item
        assert claimed.claimed_by == "alice"
        code, details = refusal(lambda: alice.Claim(rpb.ClaimRequest(reviewer="bob"), timeout=5))
        assert (code, details) == (
            Code.PERMISSION_DENIED,
            "alice may not act for 'bob': only a lead acts for another reviewer",
        )
        accept = rpb.ResolveRequest(escalation_id="e1", verdict=rpb.VERDICT_ACCEPT)
        assert refusal(lambda: running.stub("bob").Resolve(accept, timeout=5))[0] == (
            Code.FAILED_PRECONDITION  # alice holds it, and bob cannot say he is alice
        )
        mine = alice.Resolve(accept, timeout=5).item.resolution
        assert (mine.reviewer, mine.acted_by) == ("alice", "")
        for_bob = lead.Claim(rpb.ClaimRequest(reviewer="bob"), timeout=5).item
        assert for_bob.claimed_by == "bob"
        adjudicated = lead.Resolve(
            rpb.ResolveRequest(escalation_id="e2", reviewer="bob", verdict=rpb.VERDICT_ACCEPT),
            timeout=5,
        ).item.resolution
        assert (adjudicated.reviewer, adjudicated.acted_by) == ("bob", "lead")


def test_a_holder_releases_an_item_for_others(tmp_path: Path) -> None:
    """Release ends the holder's claim at once: the item is open, bob can claim it;
    alice cannot release bob's claim, a lead can release it for him; the labels the
    escalation carried and the evidence a verdict recorded come back over the wire."""
    with served(tmp_path) as running:
        labelled = message("e1", labels=["a", "b", "c"])
        running.stub("sidecar-1").Submit(rpb.SubmitRequest(escalations=[labelled]), timeout=5)
        alice, bob, lead = (running.stub(who) for who in ("alice", "bob", "lead"))
        alice.Claim(rpb.ClaimRequest(), timeout=5)
        released = alice.Release(rpb.ReleaseRequest(escalation_id="e1"), timeout=5).item
        assert (released.state, released.claimed_by) == (rpb.ITEM_STATE_OPEN, "")
        assert list(released.escalation.labels) == ["a", "b", "c"]
        assert bob.Claim(rpb.ClaimRequest(), timeout=5).item.claimed_by == "bob"
        code, details = refusal(
            lambda: alice.Release(rpb.ReleaseRequest(escalation_id="e1"), timeout=5)
        )
        assert (code, details) == (
            Code.FAILED_PRECONDITION,
            "escalation_id 'e1' is claimed by 'bob', not 'alice'",
        )
        lead.Release(rpb.ReleaseRequest(escalation_id="e1", reviewer="bob"), timeout=5)
        alice.Claim(rpb.ClaimRequest(), timeout=5)
        shown = '{"shown_at": 1.5}'
        resolution = alice.Resolve(
            rpb.ResolveRequest(
                escalation_id="e1", verdict=rpb.VERDICT_OVERRIDE, corrected_class=2, evidence=shown
            ),
            timeout=5,
        ).item.resolution
        assert (resolution.label, resolution.evidence) == ("c", shown)
        (exported,) = running.stub("exporter").Export(rpb.ExportRequest(), timeout=5)
        assert exported.resolution.evidence == shown


def test_nobody_hoards_the_queue(tmp_path: Path) -> None:
    """A reviewer holds at most HITL_REVIEW_MAX_CLAIMS items, each for at most
    HITL_REVIEW_MAX_LEASE_SECONDS."""
    with served(tmp_path, max_claims=2, max_lease_seconds=600.0) as running:
        batch = [message(f"e{i}") for i in range(5)]
        running.stub("sidecar-1").Submit(rpb.SubmitRequest(escalations=batch), timeout=5)
        alice = running.stub("alice")
        long = rpb.ClaimRequest(lease_seconds=601)
        assert refusal(lambda: alice.Claim(long, timeout=5))[0] == Code.INVALID_ARGUMENT
        for _ in range(2):
            alice.Claim(rpb.ClaimRequest(lease_seconds=600), timeout=5)
        code, details = refusal(lambda: alice.Claim(rpb.ClaimRequest(), timeout=5))
        assert code == Code.FAILED_PRECONDITION
        assert details.startswith("alice holds 2 items, the most allowed")
        assert running.stub("bob").Claim(rpb.ClaimRequest(), timeout=5).item.claimed_by == "bob"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_tls_and_mtls(tmp_path: Path, backend: str) -> None:
    """Over TLS a token still names the caller; under mTLS a client certificate alone
    does, one no principal holds is UNAUTHENTICATED, and none fails the handshake."""
    ca = Authority(tmp_path / "ca")
    issued = ca.issue("review", server=True)
    tls = {"tls_cert": issued.cert, "tls_key": issued.key}
    with served(tmp_path / "tls", backend, **tls) as running:
        secure = grpc.secure_channel(
            running.server.address, grpc.ssl_channel_credentials(ca.cert.read_bytes())
        )
        listed = running.stub("viewer", secure).List(rpb.ListRequest(), timeout=5)
        assert list(listed.items) == []
        assert refusal(lambda: CALLS["List"](running.stub(None, secure)))[0] == (
            Code.UNAUTHENTICATED
        )
    with served(tmp_path / "mtls", backend, **tls, client_ca=ca.cert) as running:
        running.server.queue.store.add_principal(
            "sidecar-cert", frozenset({"sidecar"}), "", "sidecar-cert", 0.0
        )

        def by_certificate(common_name: str | None) -> rpb_grpc.ReviewQueueStub:
            client = ca.issue(common_name) if common_name else None
            credentials = grpc.ssl_channel_credentials(
                ca.cert.read_bytes(),
                client.key.read_bytes() if client else None,
                client.cert.read_bytes() if client else None,
            )
            channel = grpc.secure_channel(running.server.address, credentials)
            return rpb_grpc.ReviewQueueStub(channel)

        submitted = CALLS["Submit"](by_certificate("sidecar-cert"))
        assert submitted.results[0].status == rpb.SubmitResult.ACCEPTED
        code, details = refusal(lambda: CALLS["Submit"](by_certificate("nobody")))
        assert (code, details) == (
            Code.UNAUTHENTICATED,
            "the client certificate 'nobody' names no principal",
        )
        assert refusal(lambda: CALLS["List"](by_certificate(None)))[0] == Code.UNAVAILABLE


# -- a lead's bulk accept and revert ----------------------------------------------------


def test_a_lead_bulk_accepts_and_reverts_one(tmp_path: Path) -> None:
    """BulkAccept resolves each open item of the model at or above the confidence as
    the calling lead's own ACCEPT and names them; a dry run changes nothing; a revert
    reopens one item, which a reviewer then resolves again; reviewers and viewers are
    refused both; every call is counted by method."""
    with served(tmp_path) as running:
        batch = [
            message("sure", calibrated_confidence=0.97),
            message("surer", calibrated_confidence=0.99, rule_id="r2"),
            message("unsure", calibrated_confidence=0.6),
            message("other", model="m2", calibrated_confidence=0.99),
        ]
        running.stub("sidecar-1").Submit(rpb.SubmitRequest(escalations=batch), timeout=5)
        lead, alice = running.stub("lead"), running.stub("alice")
        wanted = rpb.BulkAcceptRequest(model="m", min_confidence=0.95)
        for who in ("alice", "viewer"):
            code, details = refusal(partial(running.stub(who).BulkAccept, wanted, timeout=5))
            assert code == Code.PERMISSION_DENIED
            assert "may not call BulkAccept" in details

        dry = lead.BulkAccept(
            rpb.BulkAcceptRequest(model="m", min_confidence=0.95, dry_run=True), timeout=5
        )
        assert (dry.dry_run, sorted(dry.escalation_ids)) == (True, ["sure", "surer"])
        assert lead.List(rpb.ListRequest(state=rpb.ITEM_STATE_RESOLVED), timeout=5).items == []
        one_rule = lead.BulkAccept(
            rpb.BulkAcceptRequest(model="m", min_confidence=0.95, rule_id="r2"), timeout=5
        )
        assert list(one_rule.escalation_ids) == ["surer"]
        done = lead.BulkAccept(wanted, timeout=5)
        assert (done.dry_run, list(done.escalation_ids)) == (False, ["sure"])
        assert done.batch_id.startswith("bulk-")
        assert done.batch_id != one_rule.batch_id
        resolved = {
            i.escalation.escalation_id: i.resolution
            for i in lead.List(rpb.ListRequest(state=rpb.ITEM_STATE_RESOLVED), timeout=5).items
        }
        assert sorted(resolved) == ["sure", "surer"]
        assert resolved["sure"].reviewer == "lead"  # from the credential
        assert resolved["sure"].verdict == rpb.VERDICT_ACCEPT
        assert resolved["sure"].rationale.startswith(f"bulk accept {done.batch_id}: ")

        revert = rpb.RevertRequest(escalation_id="sure", reason="wrong batch")
        for who in ("alice", "viewer"):
            code, details = refusal(partial(running.stub(who).Revert, revert, timeout=5))
            assert code == Code.PERMISSION_DENIED
            assert "may not call Revert" in details
        code, details = refusal(
            lambda: lead.Revert(rpb.RevertRequest(escalation_id="nope", reason="r"), timeout=5)
        )
        assert code == Code.NOT_FOUND
        reopened = lead.Revert(revert, timeout=5).item
        assert (reopened.state, reopened.HasField("resolution")) == (rpb.ITEM_STATE_OPEN, False)
        code, details = refusal(lambda: lead.Revert(revert, timeout=5))
        assert code == Code.INVALID_ARGUMENT
        assert details.startswith("escalation_id: 'sure' is not resolved")
        claimed = alice.Claim(rpb.ClaimRequest(model="m"), timeout=5).item
        assert claimed.escalation.escalation_id == "sure"
        override = rpb.ResolveRequest(
            escalation_id="sure", verdict=rpb.VERDICT_OVERRIDE, corrected_class=2
        )
        again = alice.Resolve(override, timeout=5).item
        assert (again.state, again.resolution.reviewer, again.resolution.label_class) == (
            rpb.ITEM_STATE_RESOLVED,
            "alice",
            2,
        )
        calls = points(running.reader, "hitl.review.calls")
        assert calls[frozenset({("method", "BulkAccept"), ("outcome", "OK")})] == 3
        assert calls[frozenset({("method", "BulkAccept"), ("outcome", "PERMISSION_DENIED")})] == 2
        assert calls[frozenset({("method", "Revert"), ("outcome", "OK")})] == 1
        assert calls[frozenset({("method", "Revert"), ("outcome", "NOT_FOUND")})] == 1
        assert calls[frozenset({("method", "Revert"), ("outcome", "INVALID_ARGUMENT")})] == 1
