"""The Registry servicer: credentials checked, proto in, Registry calls, proto out,
every attempt audited. Also the one table mapping the registry's errors to gRPC
status codes, and the publisher that feeds Watch streams.

The server runs on grpc.aio: a registry holds one long-lived Watch stream per
sidecar, which an event loop carries cheaply; each store call runs in a thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
import structlog

from hitl_client.stubs.hitl.v1 import registry_pb2 as pb
from hitl_client.stubs.hitl.v1 import registry_pb2_grpc as pb_grpc
from sidecar.auth import Principal, identify
from sidecar.clock import Clock
from sidecar.errors import (
    HitlError,
    InvalidRequest,
    PolicyError,
    StoreUnavailable,
)
from sidecar.registry import messages
from sidecar.registry.auth import authorize
from sidecar.registry.metrics import RegistryMetrics
from sidecar.registry.model import AuditEntry, Proposal
from sidecar.registry.service import MAX_CALIBRATOR_BYTES, Registry, Signed, changes
from sidecar.serving import Unreadable, caller_credentials, details, status_of

log = structlog.get_logger("hitl.registry")

CHUNK_BYTES = 256 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
MAX_AUDIT_DETAIL = 512  # characters of an audit entry's detail
T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


def message_of(exc: HitlError) -> str:
    """The error as the caller reads it: a policy's field paths sit under ``policy``."""
    if isinstance(exc, PolicyError):
        return f"policy.{exc}" if exc.path else f"policy: {exc}"
    return str(exc)


class Publisher:
    """Keeps the signed head that every Watch stream sends: one per process.

    It reads the head when poked (this process committed a change) and every
    poll_seconds (another replica may have), signs it when it is new, and signs it
    again every refresh_seconds so that sidecars can tell a live registry (their
    copy's age stays small) from one they lost."""

    def __init__(
        self, registry: Registry, clock: Clock, poll_seconds: float, refresh_seconds: float
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._poll = poll_seconds
        self._refresh = refresh_seconds
        self.current: Signed | None = None
        self._changed = asyncio.Condition()
        self._poked = asyncio.Event()

    @property
    def revision(self) -> int:
        return self.current.revision if self.current else 0

    def poke(self) -> None:
        self._poked.set()

    async def run(self) -> None:
        while True:
            await self._check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self._poll)
            self._poked.clear()

    async def _check(self) -> None:
        try:
            head = await asyncio.to_thread(self._registry.store.head)
        except StoreUnavailable as exc:
            log.warning("registry.head_unreadable", error=str(exc))
            return
        current = self.current
        if head is None:
            return
        if (
            current is None
            or head.revision != current.revision
            or self._clock.now() - current.issued_at >= self._refresh
        ):
            signed = self._registry.sign(head)
            async with self._changed:
                self.current = signed
                self._changed.notify_all()

    async def after(self, seen: Signed | None) -> Signed:
        """The signed head once it is not seen."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.current is not None and self.current != seen)
            assert self.current is not None
            return self.current


class RegistryServicer(pb_grpc.RegistryServicer):
    def __init__(
        self, registry: Registry, publisher: Publisher, clock: Clock, metrics: RegistryMetrics
    ) -> None:
        self._registry = registry
        self._publisher = publisher
        self._clock = clock
        self._metrics = metrics

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: Context) -> pb.PolicyRevision:
        def work(_: Principal) -> pb.PolicyRevision:
            revision = self._registry.revision(request.revision)
            previous = None
            if revision.revision > 1:
                previous = self._registry.store.revision(revision.revision - 1)
            return messages.revision_message(
                revision,
                changes(previous, revision.document),
                _signed_message(self._registry.sign(revision)),
            )

        return await self._call(context, "GetPolicy", f"revision={request.revision}", work)

    async def Watch(
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncIterator[pb.SignedPolicy]:
        principal = await self._call(
            context, "Watch", f"from_revision={request.from_revision}", lambda p: p
        )
        log.info("registry.watching", principal=principal.name, since=request.from_revision)
        seen: Signed | None = None
        self._metrics.watching(1)
        try:
            while True:
                seen = await self._publisher.after(seen)
                yield _signed_message(seen)
        finally:
            self._metrics.watching(-1)

    async def ProposeChange(
        self, request: pb.ProposeChangeRequest, context: Context
    ) -> pb.Proposal:
        doc = messages.document_from_policy(request.policy)

        def work(principal: Principal) -> pb.Proposal:
            proposal = self._registry.propose(principal, doc, request.reason, request.base_revision)
            return self._proposal(proposal)

        return await self._call(
            context, "ProposeChange", f"base_revision={request.base_revision}", work
        )

    async def Approve(self, request: pb.DecideRequest, context: Context) -> pb.Proposal:
        return await self._call(
            context,
            "Approve",
            f"proposal={request.proposal_id}",
            lambda p: self._proposal(
                self._registry.approve(p, request.proposal_id, request.reason)
            ),
        )

    async def Reject(self, request: pb.DecideRequest, context: Context) -> pb.Proposal:
        return await self._call(
            context,
            "Reject",
            f"proposal={request.proposal_id}",
            lambda p: self._proposal(self._registry.reject(p, request.proposal_id, request.reason)),
        )

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.Proposal:
        return await self._call(
            context,
            "Rollback",
            f"to_revision={request.to_revision}",
            lambda p: self._proposal(
                self._registry.rollback(p, request.to_revision, request.reason)
            ),
        )

    async def ListProposals(
        self, request: pb.ListProposalsRequest, context: Context
    ) -> pb.ListProposalsResponse:
        state = messages.state_of(request.state)

        def work(_: Principal) -> pb.ListProposalsResponse:
            proposals = self._registry.store.proposals(state, _limit(request.limit))
            return pb.ListProposalsResponse(proposals=[self._proposal(p) for p in proposals])

        return await self._call(context, "ListProposals", f"state={state}", work)

    async def History(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryResponse:
        def work(_: Principal) -> pb.HistoryResponse:
            entries = self._registry.history(_limit(request.limit), request.before)
            return pb.HistoryResponse(
                revisions=[messages.revision_message(r, c) for r, c in entries]
            )

        return await self._call(context, "History", f"before={request.before}", work)

    async def PutCalibrator(
        self, request_iterator: AsyncIterator[pb.CalibratorChunk], context: Context
    ) -> pb.CalibratorInfo:
        # The caller is identified and authorised before a byte of the upload is read,
        # so a stranger cannot make the registry buffer anything.
        principal = await self._admit(context, "PutCalibrator", "")
        info: pb.CalibratorInfo | None = None
        data = bytearray()
        unreadable: Unreadable | None = None
        async for chunk in request_iterator:
            if isinstance(chunk, Unreadable):
                unreadable = chunk
                break
            if info is None:
                info = chunk.info if chunk.HasField("info") else pb.CalibratorInfo()
            data += chunk.data
            if len(data) > MAX_CALIBRATOR_BYTES:
                break
        first = info or pb.CalibratorInfo()

        def work(principal: Principal) -> pb.CalibratorInfo:
            if unreadable is not None:
                raise InvalidRequest("chunk", unreadable.message("chunk"))
            if info is None:
                raise InvalidRequest("info", "the first chunk must carry name, version, sha256")
            if len(data) > MAX_CALIBRATOR_BYTES:
                raise InvalidRequest("data", f"is over {MAX_CALIBRATOR_BYTES} bytes")
            stored = self._registry.put_calibrator(
                principal, info.name, info.version, info.sha256, bytes(data)
            )
            return messages.calibrator_message(stored)

        return await self._call(
            context,
            "PutCalibrator",
            f"sha256={first.sha256} name={first.name}",
            work,
            principal,
        )

    async def GetCalibrator(
        self, request: pb.GetCalibratorRequest, context: Context
    ) -> AsyncIterator[pb.CalibratorChunk]:
        info, data = await self._call(
            context,
            "GetCalibrator",
            f"sha256={request.sha256}",
            lambda _: self._registry.store.calibrator(request.sha256.lower()),
        )
        yield pb.CalibratorChunk(info=messages.calibrator_message(info), data=data[:CHUNK_BYTES])
        for start in range(CHUNK_BYTES, len(data), CHUNK_BYTES):
            yield pb.CalibratorChunk(data=data[start : start + CHUNK_BYTES])

    # -- plumbing ---------------------------------------------------------------------

    def _proposal(self, proposal: Proposal) -> pb.Proposal:
        return messages.proposal_message(proposal, self._registry.proposal_changes(proposal))

    async def _admit(self, context: Context, method: str, detail: str) -> Principal:
        """The caller, identified and authorised for method; a refusal is audited and
        becomes the caller's status."""
        principal: Principal | None = None
        try:
            principal = await asyncio.to_thread(self._identify, context)
            authorize(principal, method)
        except HitlError as exc:
            await self._refuse(context, principal, method, detail, exc)
        return principal

    async def _call(
        self,
        context: Context,
        method: str,
        detail: str,
        work: Callable[[Principal], T],
        admitted: Principal | None = None,
    ) -> T:
        """Identify and authorise the caller (unless admitted already), run work in a
        thread, audit the attempt; a HitlError becomes the caller's status (after it is
        audited)."""
        principal = admitted or await self._admit(context, method, detail)
        try:
            result = await asyncio.to_thread(work, principal)
        except HitlError as exc:
            await self._refuse(context, principal, method, detail, exc)
        await self._audit(principal, method, "OK", detail)
        if method in _CHANGING:
            self._publisher.poke()
        return result

    async def _refuse(
        self,
        context: Context,
        principal: Principal | None,
        method: str,
        detail: str,
        exc: HitlError,
    ) -> NoReturn:
        """Audit the attempt exc ended, then answer the caller with its status."""
        code = status_of(exc)
        await self._audit(principal, method, code.name, f"{detail}: {message_of(exc)}")
        await _abort(context, code, message_of(exc))

    def _identify(self, context: Context) -> Principal:
        token, subject = caller_credentials(context)
        store = self._registry.store
        return identify(token, subject, store.principal_for_token, store.principal_for_subject)

    async def _audit(
        self, principal: Principal | None, method: str, outcome: str, detail: str
    ) -> None:
        if len(detail) > MAX_AUDIT_DETAIL:  # callers fill it: bounded, so they cannot flood
            detail = detail[:MAX_AUDIT_DETAIL] + f"... ({len(detail)} characters)"
        entry = AuditEntry(
            self._clock.now(), principal.name if principal else "", method, outcome, detail
        )
        self._metrics.call(method, outcome)
        log.info(
            "registry.call",
            principal=entry.principal,
            method=method,
            outcome=outcome,
            detail=detail,
        )
        try:
            await asyncio.to_thread(self._registry.store.record, [entry])
        except StoreUnavailable as exc:
            log.error("registry.audit_unwritable", error=str(exc), method=method)


_CHANGING = frozenset({"ProposeChange", "Approve", "Rollback"})


def _signed_message(signed: Signed) -> pb.SignedPolicy:
    return pb.SignedPolicy(
        revision=signed.revision,
        issued_at=signed.issued_at,
        document=signed.document,
        signature=signed.signature,
        key_id=signed.key_id,
    )


def _limit(limit: int) -> int:
    if limit < 0:
        raise InvalidRequest("limit", "must not be negative")
    return min(limit or DEFAULT_LIMIT, MAX_LIMIT)


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, details(message))
    raise AssertionError("context.abort returns only by raising")
