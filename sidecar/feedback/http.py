"""The Feedback service over HTTP (the Connect protocol: a POST of the request as JSON
or protobuf to ``/hitl.v1.Feedback/<Method>``), for browser and mobile clients that
do not speak gRPC, and for ``curl``. The server, the routing and the JSON mapping
are connect-python's, generated from the same proto (``stubs/feedback_connect.py``);
the handlers are the gRPC servicer's: the same gate (a bearer token in
``Authorization``), the same FeedbackLog, the same messages. The log's calls block on
the database, so each runs in a worker thread, off the server's event loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal, bearer_token
from sidecar.errors import HitlError
from sidecar.feedback.handlers import HANDLERS
from sidecar.feedback.ingest import FeedbackLog
from sidecar.feedback.stubs.feedback_connect import FeedbackASGIApplication
from sidecar.gate import Gate
from sidecar.serving import details, status_of
from sidecar.telemetry.call_spans import CallSpans


class FeedbackHttp:
    def __init__(self, feedback: FeedbackLog, gate: Gate, spans: CallSpans) -> None:
        self._feedback = feedback
        self._gate = gate
        self._spans = spans

    async def record(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await self._call(ctx, "Record", request)

    async def record_batch(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await self._call(ctx, "RecordBatch", request)

    async def record_decisions(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await self._call(ctx, "RecordDecisions", request)

    async def get(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await self._call(ctx, "Get", request)

    async def labels(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await self._call(ctx, "Labels", request)

    async def export(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        for chunk in await self._call(ctx, "Export", request):
            yield chunk

    async def _call(self, ctx: RequestContext[Any, Any], method: str, request: Any) -> Any:
        handler = HANDLERS[method]
        headers = ctx.request_headers()
        token = bearer_token({"authorization": headers.get("authorization", "")})
        peer = ctx.client_address() or ""

        def work(principal: Principal) -> Any:
            return handler(self._feedback, principal, request)

        def call() -> Any:
            with self._spans.span("connect_rpc", method, headers.items()):
                return self._gate.admitted(token, "", peer, method, work)

        try:
            return await asyncio.to_thread(call)
        except HitlError as exc:
            raise ConnectError(Code[status_of(exc).name], details(str(exc))) from None


def http_application(feedback: FeedbackLog, gate: Gate, spans: CallSpans) -> Any:
    return _readable(FeedbackASGIApplication(FeedbackHttp(feedback, gate, spans)))


_INPUTS = {
    f"/{fpb.DESCRIPTOR.package}.Feedback/{method.name}": method.input_type.full_name
    for method in fpb.DESCRIPTOR.services_by_name["Feedback"].methods
}
_KINDS = ("application/json", "application/proto")


def _readable(app: Any) -> Any:
    """app behind a check that a unary request's body is the method's request message
    (JSON or protobuf): one that is not answers 400 ``invalid_argument`` naming the
    request type, as gRPC's servers here do, where connect-python would answer 500
    ``unknown``. A compressed body is left to the app."""

    async def checked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or ())
        kind = headers.get(b"content-type", b"").decode().partition(";")[0].strip()
        wanted = _INPUTS.get(scope.get("path", ""))
        if scope["type"] != "http" or wanted is None or kind not in _KINDS:
            await app(scope, receive, send)
            return
        if headers.get(b"content-encoding", b"identity") != b"identity":
            await app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if not _parses(body, wanted, kind):
            error = {"code": "invalid_argument", "message": f"the body is not a {wanted}"}
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": json.dumps(error).encode()})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    return checked


def _parses(body: bytes, full_name: str, kind: str) -> bool:
    message = getattr(fpb, full_name.rpartition(".")[2])()
    try:
        if kind == "application/json":
            json_format.Parse(body, message)
        else:
            message.ParseFromString(body)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError, ValueError):
        return False
    return True
