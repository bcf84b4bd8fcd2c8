"""The policy from the registry: watched, verified, persisted, and never able to
take routing down.

On start the last-known-good copy on the local volume is loaded and, if every
check passes, served at once (a copy past its maximum age is served too: the core
answers FALLBACK_STALE_POLICY for it until the registry refreshes it). Then the
source Watches the registry from the revision it holds. For each SignedPolicy:

- the signature is verified and the document parsed; a failure is rejected;
- a revision below the one in force is rejected (``stale_revision``);
- the same revision with a newer ``issued_at`` (the registry re-signs its head every
  refresh interval) only refreshes the snapshot's age: no artefact is touched;
- a newer revision has each calibrator it names that is not yet on disk downloaded
  by sha256 and verified, every session built and warmed off the event loop, and is
  stored as the last-known-good copy before it is swapped in; artefacts no longer
  named are then deleted.

A rejected policy is logged (``policy.rejected`` with its reason), counted, and
changes nothing. The registry re-sends its head with every refresh, so a bad head
is rejected again each time and the counter keeps rising while the registry serves
it: alert on its rate.

When the stream fails or ends, it is opened again after an exponential backoff
with full jitter (capped at 10 s by default), from the revision in force. While no
stream is delivering, GetPolicy is polled as a fallback, so a registry whose
streams are broken (a proxy, say) still gets policies through. A stream that stays
silent much longer than the registry's refresh interval is presumed dead and
reopened. Refusals (UNAUTHENTICATED, PERMISSION_DENIED) are logged as
``policy.registry_refused`` and retried the same way, since an operator may fix the
token or the role without restarting the sidecar.

Nothing here raises into the server, and nothing blocks the event loop: file I/O
and session building run in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import orjson
import structlog

from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from hitl_client.stubs.hitl.v1 import registry_pb2_grpc as rpb_grpc
from sidecar.clock import Clock, SystemClock
from sidecar.core.policy import CalibratorRef, Policy
from sidecar.errors import PolicyError, SignatureError
from sidecar.policy.last_known_good import DigestMismatch, LastKnownGood
from sidecar.policy.loader import build_snapshot
from sidecar.policy.signed import open_signed
from sidecar.policy.signing import Verifier
from sidecar.policy.snapshot import Snapshot, SnapshotHolder
from sidecar.policy.source import (
    CALIBRATOR,
    SCHEMA,
    SHA256,
    SIGNATURE,
    STALE_REVISION,
    SourceStats,
    rejection_reason,
)
from sidecar.retry import backoff_delay

log = structlog.get_logger("hitl.policy")

# The channel's own reconnect backoff, capped like the Watch's (WatchSettings): gRPC's
# default grows to 120 s and calls fail at once while it waits, so a registry back
# after a long outage would stay unreached for that long (measured: 25 s after a 45 s
# outage by default, under 10 s with this cap).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 1000),
    ("grpc.max_reconnect_backoff_ms", 10_000),
)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


@dataclass(frozen=True, slots=True)
class RegistryConnection:
    """Where the registry is and how to prove who we are to it."""

    target: str
    token: str = field(default="", repr=False)
    # PEM bytes; a CA turns TLS on, a key and certificate chain add a client certificate.
    root_certificates: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = None

    @property
    def tls(self) -> bool:
        return self.root_certificates is not None

    @property
    def loopback(self) -> bool:
        host = self.target.rpartition(":")[0].strip("[]")
        return host in _LOOPBACK

    def channel(self) -> grpc.aio.Channel:
        """A new channel (call on the event loop that will use it)."""
        if not self.tls:
            return grpc.aio.insecure_channel(self.target, CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(
            self.root_certificates, self.private_key, self.certificate_chain
        )
        return grpc.aio.secure_channel(self.target, credentials, CHANNEL_OPTIONS)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


@dataclass(frozen=True, slots=True)
class WatchSettings:
    # GetPolicy every this many seconds while no Watch stream is delivering.
    poll_seconds: float = 10.0
    backoff_base_seconds: float = 0.2
    backoff_cap_seconds: float = 10.0
    # A stream silent this long is reopened (the registry re-signs its head every 30 s
    # by default, so a live stream is never this quiet).
    idle_seconds: float = 120.0
    call_timeout_seconds: float = 10.0
    download_timeout_seconds: float = 60.0
    # Calibrators are small graphs; this bounds what one download may hold in memory.
    max_artefact_bytes: int = 64 * 1024 * 1024


class _Rejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _NotNow(Exception):
    """The revision cannot be applied now for a local reason; it is not rejected."""


class RegistryPolicySource:
    def __init__(
        self,
        connection: RegistryConnection,
        holder: SnapshotHolder,
        store: LastKnownGood,
        verifier: Verifier,
        settings: WatchSettings | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.connection = connection
        self.stats = SourceStats()
        self._holder = holder
        self._store = store
        self._verifier = verifier
        self._settings = settings or WatchSettings()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._source = f"registry:{connection.target}"
        self._metadata = connection.metadata()
        self._lock = asyncio.Lock()
        self._signed: rpb.SignedPolicy | None = None  # the signed form of the policy in force
        self._stub: rpb_grpc.RegistryAsyncStub | None = None  # once run() opened the channel
        self._streaming = False  # a Watch stream is open and has delivered

    @property
    def revision(self) -> int:
        """The revision in force (0: none)."""
        current = self._holder.current
        return current.policy.revision if current is not None else 0

    @property
    def _registry(self) -> rpb_grpc.RegistryAsyncStub:
        if self._stub is None:
            raise RuntimeError("the channel is opened by run()")
        return self._stub

    async def run(self) -> None:
        """Restore the last-known-good copy, then follow the registry until cancelled."""
        await self._restore()
        if self.connection.token and not self.connection.tls and not self.connection.loopback:
            log.warning(
                "policy.token_without_tls",
                registry=self.connection.target,
                detail="the bearer token is sent in clear text; configure a CA for TLS",
            )
        channel = self.connection.channel()
        self._stub = rpb_grpc.RegistryStub(channel)
        poller = asyncio.create_task(self._poll_while_down())
        try:
            await self._watch_forever()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await channel.close(None)

    # -- start-up ------------------------------------------------------------------

    async def _restore(self) -> None:
        try:
            stored = await asyncio.to_thread(self._store.load)
        except OSError as exc:
            log.error("policy.last_known_good_rejected", reason="unreadable", error=str(exc))
            return
        if stored is None:
            log.info("policy.no_last_known_good", path=str(self._store.policy_path))
            return
        source = f"last-known-good:{self._store.policy_path}"
        try:
            snapshot = await asyncio.to_thread(
                build_snapshot, stored.policy, self._store.artefacts, source, None
            )
        except PolicyError as exc:
            log.error(
                "policy.last_known_good_rejected", reason=rejection_reason(exc), error=str(exc)
            )
            return
        self._signed = stored.signed
        self._holder.swap(snapshot)
        self._loaded(snapshot, "last_known_good")

    # -- the Watch stream ----------------------------------------------------------

    async def _watch_forever(self) -> None:
        attempt = 0
        while True:
            self._streaming = False
            try:
                await self._watch_once()
                error, code = "the registry ended the stream", None
            except grpc.aio.AioRpcError as exc:
                error, code = f"{exc.code().name}: {exc.details()}", exc.code()
            except TimeoutError:
                error, code = f"no message for {self._settings.idle_seconds:g} s", None
            except Exception as exc:  # a bug must not end the watch: log it and go on
                log.exception("policy.watch_error", registry=self.connection.target)
                error, code = repr(exc), None
            if self._streaming:
                attempt = 0
            self._streaming = False
            delay = backoff_delay(
                attempt,
                self._settings.backoff_base_seconds,
                self._settings.backoff_cap_seconds,
                self._rng,
            )
            self._log_failure(error, code, attempt, delay)
            attempt += 1
            await asyncio.sleep(delay)
            self.stats.reconnects += 1

    async def _watch_once(self) -> None:
        request = rpb.WatchRequest(from_revision=self.revision)
        call = self._registry.Watch(request, metadata=self._metadata)
        loop = asyncio.get_running_loop()
        idle = self._settings.idle_seconds
        try:
            async with asyncio.timeout(idle) as timer:
                async for signed in call:
                    timer.reschedule(None)  # a download and a session build may be slow
                    self._streaming = True
                    await self._apply(signed, "watch")
                    timer.reschedule(loop.time() + idle)
        finally:
            call.cancel()

    def _log_failure(
        self, error: str, code: grpc.StatusCode | None, attempt: int, delay: float
    ) -> None:
        fields = {
            "registry": self.connection.target,
            "error": error,
            "attempt": attempt + 1,
            "retry_in_seconds": round(delay, 3),
            "revision": self.revision,
        }
        if code in REFUSED:
            log.error(
                "policy.registry_refused",
                **fields,
                detail="check the sidecar's token or certificate and its sidecar role",
            )
        elif attempt == 0:
            log.warning("policy.stream_lost", **fields)
        else:
            log.info("policy.reconnect_failed", **fields)

    # -- the poll fallback ---------------------------------------------------------

    async def _poll_while_down(self) -> None:
        while True:
            await asyncio.sleep(self._settings.poll_seconds)
            if not self._streaming:
                try:
                    await self._poll_once()
                except Exception:  # a bug must not end the fallback: log it and go on
                    log.exception("policy.poll_error", registry=self.connection.target)

    async def _poll_once(self) -> None:
        try:
            answer = await self._registry.GetPolicy(
                rpb.GetPolicyRequest(revision=0),
                metadata=self._metadata,
                timeout=self._settings.call_timeout_seconds,
            )
            if not answer.HasField("signed"):
                log.warning("policy.poll_unsigned", revision=answer.revision)
                return
            await self._apply(answer.signed, "poll")
        except grpc.aio.AioRpcError as exc:
            if exc.code() in REFUSED:
                log.error(
                    "policy.registry_refused",
                    registry=self.connection.target,
                    error=f"{exc.code().name}: {exc.details()}",
                    via="poll",
                )
            elif exc.code() is grpc.StatusCode.NOT_FOUND:
                log.info("policy.registry_empty", registry=self.connection.target)
            else:
                log.info(
                    "policy.poll_failed",
                    registry=self.connection.target,
                    error=f"{exc.code().name}: {exc.details()}",
                )

    # -- applying a signed policy --------------------------------------------------

    async def _apply(self, signed: rpb.SignedPolicy, via: str) -> None:
        """Verify, check and apply one SignedPolicy. Raises AioRpcError when a download
        fails for a reason that may pass (the caller retries); rejects anything else."""
        async with self._lock:
            try:
                await self._apply_locked(signed, via)
            except _Rejected as exc:
                self._reject(exc.reason, signed, str(exc), via)
            except _NotNow:
                pass  # logged where it happened; the next delivery tries again

    async def _apply_locked(self, signed: rpb.SignedPolicy, via: str) -> None:
        try:
            policy = open_signed(signed, self._verifier)
        except SignatureError as exc:
            raise _Rejected(SIGNATURE, str(exc)) from exc
        except PolicyError as exc:
            raise _Rejected(SCHEMA, str(exc)) from exc
        current = self._holder.current
        if current is not None and policy.revision < current.policy.revision:
            raise _Rejected(
                STALE_REVISION,
                f"revision {policy.revision} is older than revision"
                f" {current.policy.revision} in force",
            )
        if current is not None and policy.revision == current.policy.revision:
            if self._same_content(signed):
                await self._refresh(current, signed, policy, via)
                return
            log.warning(
                "policy.revision_reused",
                revision=policy.revision,
                detail="the registry sent other content under the revision in force; rebuilding",
            )
        await self._advance(signed, policy, via)

    def _same_content(self, signed: rpb.SignedPolicy) -> bool:
        """Whether signed holds the policy in force, issued_at aside."""
        if self._signed is None:
            return False
        return _content(signed.document) == _content(self._signed.document)

    async def _refresh(
        self, current: Snapshot, signed: rpb.SignedPolicy, policy: Policy, via: str
    ) -> None:
        """The same revision, issued again: a fresher age, nothing reloaded."""
        old = current.policy.issued_at
        if policy.issued_at is None or (old is not None and policy.issued_at <= old):
            return
        snapshot = replace(current, policy=replace(current.policy, issued_at=policy.issued_at))
        await self._persist(signed)
        self._signed = signed
        self._holder.swap(snapshot)
        log.debug("policy.refreshed", revision=policy.revision, issued_at=policy.issued_at, via=via)

    async def _advance(self, signed: rpb.SignedPolicy, policy: Policy, via: str) -> None:
        refs = {model.calibrator.sha256: model.calibrator for model in policy.models.values()}
        for sha256, ref in refs.items():
            if not await asyncio.to_thread(self._store.has_artefact, sha256):
                await self._download(ref)
        try:
            snapshot = await asyncio.to_thread(
                build_snapshot, policy, self._store.artefacts, self._source, self._holder.current
            )
        except PolicyError as exc:
            raise _Rejected(rejection_reason(exc), str(exc)) from exc
        persisted = await self._persist(signed)
        self._signed = signed
        self._holder.swap(snapshot)
        self._loaded(snapshot, "registry", via)
        if persisted:
            try:
                removed = await asyncio.to_thread(self._store.prune, refs.keys())
            except OSError as exc:
                log.warning("policy.prune_failed", error=str(exc))
            else:
                if removed:
                    log.info("policy.artefacts_removed", sha256=removed)

    async def _download(self, ref: CalibratorRef) -> None:
        """Fetch one calibrator into the artefact directory, verified by sha256."""
        call = self._registry.GetCalibrator(
            rpb.GetCalibratorRequest(sha256=ref.sha256),
            metadata=self._metadata,
            timeout=self._settings.download_timeout_seconds,
        )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in call:
                size += len(chunk.data)
                if size > self._settings.max_artefact_bytes:
                    call.cancel()
                    raise _Rejected(
                        CALIBRATOR,
                        f"calibrator {ref.name} ({ref.sha256}) is larger than"
                        f" {self._settings.max_artefact_bytes} bytes",
                    )
                chunks.append(chunk.data)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise _Rejected(
                    CALIBRATOR, f"the registry has no calibrator {ref.name} ({ref.sha256})"
                ) from exc
            raise
        try:
            await asyncio.to_thread(self._store.write_artefact, ref.sha256, chunks)
        except DigestMismatch as exc:
            raise _Rejected(SHA256, f"calibrator {ref.name}: {exc}") from exc
        except OSError as exc:
            # Local trouble (a full disk), not the policy's fault: not counted as a
            # rejection; the next delivery of the revision tries again.
            log.error("policy.artefact_write_failed", sha256=ref.sha256, error=str(exc))
            raise _NotNow from exc
        log.info("policy.artefact_downloaded", name=ref.name, sha256=ref.sha256, bytes=size)

    async def _persist(self, signed: rpb.SignedPolicy) -> bool:
        try:
            await asyncio.to_thread(self._store.save, signed)
        except OSError as exc:
            log.error(
                "policy.persist_failed",
                revision=signed.revision,
                error=str(exc),
                detail="served, but a restart would load the older last-known-good copy",
            )
            return False
        return True

    def _reject(self, reason: str, signed: rpb.SignedPolicy, error: str, via: str) -> None:
        self.stats.rejected[reason] += 1
        emit = log.warning if reason == STALE_REVISION else log.error
        emit(
            "policy.rejected",
            reason=reason,
            revision=signed.revision,
            key_id=signed.key_id,
            via=via,
            error=error,
            revision_in_force=self.revision,
        )

    def _loaded(self, snapshot: Snapshot, source: str, via: str = "") -> None:
        policy = snapshot.policy
        stale = policy.is_stale(self._clock.now())
        log.info(
            "policy.loaded",
            source=source,
            via=via or None,
            revision=policy.revision,
            issued_at=policy.issued_at,
            models=sorted(policy.models),
            stale=stale,
        )
        if stale:
            log.warning(
                "policy.stale",
                revision=policy.revision,
                max_age_seconds=policy.max_age_seconds,
                detail="decisions fall back (HUMAN_ASSISTED, degraded) until the registry"
                " issues it again",
            )


def _content(document: bytes) -> dict[str, Any]:
    """A verified document without its issued_at."""
    doc: dict[str, Any] = orjson.loads(document)
    doc.pop("issued_at", None)
    return doc
