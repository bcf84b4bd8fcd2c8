"""A stand-in for the registry's sidecar-facing gRPC surface (Watch, GetPolicy,
GetCalibrator), served by grpc.aio on a loopback port, for testing the sidecar's
policy source over a real connection.

It keeps the contract of registry.proto as the sidecar sees it: Watch sends the
head at once (re-signed even when it is the revision the caller holds), then each
new revision, and the head re-signed every ``refresh_seconds``; documents are
canonical JSON signed with Ed25519 over CONTEXT + document; calibrators are served
by sha256 in chunks, the first carrying their info. It has none of the registry's
own logic (proposals, approvals, storage): tests publish documents directly. Knobs
let a test break it in the ways a real one can break: tampered documents, wrong
bytes under a sha256, refused credentials, broken streams, old issued_at."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import grpc

from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from hitl_client.stubs.hitl.v1 import registry_pb2_grpc as rpb_grpc
from sidecar.policy.signing import Signer, canonical, generate_key_pair, load_signer
from tests.artefacts import one_model

CHUNK_BYTES = 16 * 1024


def rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()


def registry_doc(
    sha256: str, version: str = "t-v1", name: str = "cal", **model: Any
) -> dict[str, Any]:
    """One model 'm' whose calibrator is named in the registry (no revision, no issued_at)."""
    return one_model({"name": name, "sha256": sha256, "version": version}, model)


def sign_policy(
    signer: Signer, doc: dict[str, Any], revision: int, issued_at: float, *, tamper: bool = False
) -> rpb.SignedPolicy:
    """doc as the registry signs it at issued_at; tamper alters t_high after signing."""
    document = canonical({"revision": revision, "issued_at": rfc3339(issued_at), **doc})
    signature = signer.sign(document)
    if tamper:
        document = document.replace(b'"t_high":0.9', b'"t_high":0.1')
        assert b'"t_high":0.1' in document
    return rpb.SignedPolicy(
        revision=revision,
        issued_at=issued_at,
        document=document,
        signature=signature,
        key_id=signer.key_id,
    )


class FakeRegistry(rpb_grpc.RegistryServicer):
    def __init__(self, signer: Signer, token: str = "", refresh_seconds: float = 30.0) -> None:
        self.signer = signer
        self.token = token
        self.refresh_seconds = refresh_seconds
        self.revisions: list[dict[str, Any]] = []  # index i: revision i + 1
        self.tampered: set[int] = set()
        self.blobs: dict[str, bytes] = {}
        self.watches: list[int] = []  # from_revision of each Watch, in order
        self.downloads: list[str] = []
        self.polls = 0
        self.break_streams = False  # Watch fails UNAVAILABLE at once (GetPolicy still works)
        self.silent_streams = False  # Watch stays open and sends nothing (a buffering proxy)
        self.issued_at_offset = 0.0  # added to now: negative for old signatures
        self._changed = asyncio.Condition()
        self._generation = 0

    @property
    def head(self) -> int:
        return len(self.revisions)

    async def publish(self, doc: dict[str, Any], *, tamper: bool = False) -> int:
        """Make doc the next revision (altered after signing when tamper); returns it."""
        self.revisions.append(doc)
        if tamper:
            self.tampered.add(self.head)
        async with self._changed:
            self._changed.notify_all()
        return self.head

    async def drop_streams(self) -> None:
        """End every open Watch with UNAVAILABLE, as a restart or a proxy would."""
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()

    def signed(self, revision: int) -> rpb.SignedPolicy:
        return sign_policy(
            self.signer,
            self.revisions[revision - 1],
            revision,
            _now() + self.issued_at_offset,
            tamper=revision in self.tampered,
        )

    # -- the RPCs ----------------------------------------------------------------

    async def GetPolicy(self, request: rpb.GetPolicyRequest, context: Any) -> rpb.PolicyRevision:
        await self._authenticate(context)
        self.polls += 1
        revision = request.revision or self.head
        if not 1 <= revision <= self.head:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no revision {revision}")
        return rpb.PolicyRevision(revision=revision, signed=self.signed(revision))

    async def Watch(
        self, request: rpb.WatchRequest, context: Any
    ) -> AsyncIterator[rpb.SignedPolicy]:
        await self._authenticate(context)
        self.watches.append(request.from_revision)
        if self.break_streams:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "streams are broken here")
        if self.silent_streams:
            await asyncio.Event().wait()
        generation = self._generation
        last = request.from_revision  # the newest revision the caller has
        if self.head and self.head >= request.from_revision:
            yield self.signed(self.head)
            last = self.head
        while True:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), self.refresh_seconds)
                    refresh = False
                except TimeoutError:
                    refresh = True
            if generation != self._generation:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "stream dropped")
            if self.head > last:
                for revision in range(last + 1, self.head + 1):
                    yield self.signed(revision)
                last = self.head
            elif refresh and self.head:
                yield self.signed(self.head)

    async def GetCalibrator(
        self, request: rpb.GetCalibratorRequest, context: Any
    ) -> AsyncIterator[rpb.CalibratorChunk]:
        await self._authenticate(context)
        self.downloads.append(request.sha256)
        data = self.blobs.get(request.sha256)
        if data is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no calibrator {request.sha256}")
            return
        info = rpb.CalibratorInfo(sha256=request.sha256, name="cal", size=len(data))
        for start in range(0, max(len(data), 1), CHUNK_BYTES):
            chunk = rpb.CalibratorChunk(data=data[start : start + CHUNK_BYTES])
            if start == 0:
                chunk.info.CopyFrom(info)
            yield chunk

    # The rest of the service is not the sidecar's business.

    async def ProposeChange(self, request: rpb.ProposeChangeRequest, context: Any) -> rpb.Proposal:
        await _unimplemented(context)

    async def Approve(self, request: rpb.DecideRequest, context: Any) -> rpb.Proposal:
        await _unimplemented(context)

    async def Reject(self, request: rpb.DecideRequest, context: Any) -> rpb.Proposal:
        await _unimplemented(context)

    async def ListProposals(
        self, request: rpb.ListProposalsRequest, context: Any
    ) -> rpb.ListProposalsResponse:
        await _unimplemented(context)

    async def History(self, request: rpb.HistoryRequest, context: Any) -> rpb.HistoryResponse:
        await _unimplemented(context)

    async def Rollback(self, request: rpb.RollbackRequest, context: Any) -> rpb.Proposal:
        await _unimplemented(context)

    async def PutCalibrator(self, request_iterator: Any, context: Any) -> rpb.CalibratorInfo:
        await _unimplemented(context)

    async def _authenticate(self, context: Any) -> None:
        if not self.token:
            return
        given = dict(context.invocation_metadata()).get("authorization", "")
        if given != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")


async def _unimplemented(context: Any) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in registry")
    raise AssertionError("abort raises")


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def new_signer(directory: Path) -> Signer:
    """A fresh key pair in directory: signing.pem and public.pem."""
    generate_key_pair(directory / "signing.pem", directory / "public.pem")
    return load_signer(directory / "signing.pem")


@asynccontextmanager
async def serving(
    registry: FakeRegistry,
    port: int = 0,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[str]:
    """registry served on 127.0.0.1:port (0: any); yields its address."""
    server = grpc.aio.server()
    rpb_grpc.add_RegistryServicer_to_server(registry, server)
    address = f"127.0.0.1:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(0)
