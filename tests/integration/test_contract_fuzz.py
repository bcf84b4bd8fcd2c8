"""Random and mutated protobuf bodies, sent over real gRPC to every RPC of the
sidecar, the registry, the review queue and the feedback service (processes on
loopback): each answer is one of the documented status codes, no message carries a
Python class name or a traceback, a stream answers every frame and stays open, and
every server still serves afterwards. Seeded (hypothesis, derandomized) and bounded
in examples."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import feedback_pb2, registry_pb2, review_pb2, router_pb2
from sidecar.escalation.messages import to_message
from sidecar.feedback.client import outcome_event
from tests.escalations import escalation
from tests.feedback_service import FeedbackProcess, add_principals
from tests.feedback_service import start as start_feedback
from tests.integration.conftest import ReviewProcess, SidecarProcess
from tests.registry import Registry, as_process

pytestmark = pytest.mark.integration

Code = grpc.StatusCode
DOCUMENTED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.UNAVAILABLE,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED,  # the feedback service's rate limit per principal
}
# Python's own names, which no message a caller reads should carry.
PYTHON_NAMES = re.compile(r"Traceback|\b\w+(Error|Exception)\b|<class |\bNone\b")
# Bodies that broke the contract before: invalid UTF-8 in a string field (a JS client
# cutting a string inside an emoji), a truncated varint, a corrupt frame.
FEEDBACK_EVENT = outcome_event("fb-1", "r1", "m", true_class=1)
KNOWN_BAD = [b"\x0a\x02\xff\xfe", b"\x12\x03\xe2\x82", b"\x08\xff", b"\xff\xff\xff\xff", b""]
EXAMPLES = {
    "hitl.v1.RouteRequest": route_request("r1", "m", [4.0, 0.0, 0.0]).SerializeToString(),
    "hitl.v1.RouteBatchRequest": router_pb2.RouteBatchRequest(
        requests=[route_request("b1", "m", [4.0, 0.0, 0.0])]
    ).SerializeToString(),
    "hitl.v1.SubmitRequest": review_pb2.SubmitRequest(
        escalations=[to_message(escalation("f1"))]
    ).SerializeToString(),
    "hitl.v1.FeedbackEvent": FEEDBACK_EVENT.SerializeToString(),
    "hitl.v1.RecordBatchRequest": feedback_pb2.RecordBatchRequest(
        events=[FEEDBACK_EVENT]
    ).SerializeToString(),
}


def bodies(service: ServiceDescriptor, method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    """Random bytes, and a valid body of the method's request with bytes flipped,
    cut or inserted."""
    valid = EXAMPLES.get(method.input_type.full_name, b"\x0a\x01x")

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        body = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(body)))
            change = draw(st.sampled_from(["flip", "cut", "insert"]))
            if change == "flip" and at < len(body):
                body[at] ^= draw(st.integers(1, 255))
            elif change == "cut":
                del body[at:]
            else:
                body[at:at] = draw(st.binary(min_size=1, max_size=4))
        return bytes(body)

    return st.one_of(st.binary(max_size=64), mutated())


class Caller:
    """Sends raw bodies to one service's methods, checking each answer."""

    def __init__(self, address: str, service: ServiceDescriptor, token: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.service = service
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.answers: list[Code] = []

    def send(self, method: MethodDescriptor, body: bytes) -> None:
        path = f"/{self.service.full_name}/{method.name}"
        try:
            if method.client_streaming:
                frames = [body, body, EXAMPLES.get(method.input_type.full_name, body)]
                if method.server_streaming:
                    call = self.channel.stream_stream(path, None, None)
                    answers = list(call(iter(frames), metadata=self.metadata, timeout=5))
                    assert len(answers) == len(frames), "every frame gets an answer"
                else:
                    self.channel.stream_unary(path, None, None)(
                        iter(frames), metadata=self.metadata, timeout=5
                    )
            elif method.server_streaming:
                # The first answer or none: Watch streams on, and waits for a first policy.
                stream = self.channel.unary_stream(path, None, None)(
                    body, metadata=self.metadata, timeout=0.3
                )
                next(iter(stream), None)
                stream.cancel()  # type: ignore[no-untyped-call]
            else:
                self.channel.unary_unary(path, None, None)(body, metadata=self.metadata, timeout=5)
            self.answers.append(Code.OK)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            if code in (Code.CANCELLED, Code.DEADLINE_EXCEEDED) and method.server_streaming:
                self.answers.append(Code.OK)
                return
            assert code in DOCUMENTED, (method.name, body, code, details)
            assert not PYTHON_NAMES.search(details), (method.name, body, details)
            self.answers.append(code)

    def serving(self) -> bool:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def fuzz(caller: Caller) -> None:
    for method in caller.service.methods:
        for body in KNOWN_BAD:
            caller.send(method, body)
        _random(caller, method)
    assert caller.serving()
    assert Code.INVALID_ARGUMENT in caller.answers


def _random(caller: Caller, method: MethodDescriptor) -> None:
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies(caller.service, method))
    def one(body: bytes) -> None:
        caller.send(method, body)

    one()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with as_process("sqlite", tmp_path / "registry") as running:
        yield running


@pytest.fixture
def feedback(tmp_path: Path) -> Iterator[FeedbackProcess]:
    db = f"sqlite:{tmp_path / 'feedback.db'}"
    running = start_feedback(
        tmp_path / "feedback", db, add_principals(db, {"fuzz": ("client", "viewer", "exporter")})
    )
    yield running
    running.process.kill()
    running.process.wait()


def test_no_body_bends_the_contract(
    sidecar: SidecarProcess,
    review_queue: ReviewProcess,
    registry: Registry,
    feedback: FeedbackProcess,
) -> None:
    targets = {
        "sidecar": (sidecar.address, router_pb2, "Router", ""),
        "review": (review_queue.address, review_pb2, "ReviewQueue", review_queue.tokens["desk"]),
        "registry": (registry.address, registry_pb2, "Registry", registry.tokens["alice"]),
        "feedback": (feedback.address, feedback_pb2, "Feedback", feedback.tokens["fuzz"]),
    }
    for name, (address, module, service_name, token) in targets.items():
        service = module.DESCRIPTOR.services_by_name[service_name]
        caller = Caller(address, service, token)
        try:
            fuzz(caller)
        finally:
            caller.channel.close()
        assert caller.answers, name


def test_one_unreadable_request_fails_alone(sidecar: SidecarProcess) -> None:
    """A RouteBatch whose second request holds invalid UTF-8: the others are routed,
    that one alone answers INVALID_ARGUMENT naming requests[1]; on RouteStream an
    empty or garbage frame gets an error answer and the stream carries on."""
    good = route_request("ok-1", "m", [4.0, 0.0, 0.0]).SerializeToString()
    broken = b"\x0a\x02\xff\xfe" + good[4:]  # request_id: invalid UTF-8
    batch = router_pb2.RouteBatchFrames(requests=[good, broken]).SerializeToString()
    with grpc.insecure_channel(sidecar.address) as channel:
        raw = channel.unary_unary("/hitl.v1.Router/RouteBatch", None, None)(batch, timeout=5)
        answer = router_pb2.RouteBatchResponse.FromString(raw)
        assert answer.results[0].HasField("response")
        assert answer.results[1].error.code == Code.INVALID_ARGUMENT.value[0]
        assert answer.results[1].error.message.startswith("requests[1]: request: not a valid")
        frames = [b"", b"\xff\xff\xff", batch]
        stream = channel.stream_stream("/hitl.v1.Router/RouteStream", None, None)
        answers = [
            router_pb2.RouteBatchResponse.FromString(r) for r in stream(iter(frames), timeout=5)
        ]
    assert [len(a.results) for a in answers] == [1, 1, 2]
    assert answers[0].results[0].error.message.startswith("requests: must hold at least one")
    assert answers[1].results[0].error.message.startswith("requests: batch: not a valid")
    assert answers[2].results[0].HasField("response")
