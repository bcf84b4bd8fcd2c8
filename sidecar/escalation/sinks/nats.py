"""The NATS JetStream sink: one stream per deployment (``HITL_<DEPLOYMENT>``), a
subject per model and tier (``hitl.<deployment>.<model>.<tier>``), the escalation
as JSON (the spool's record, sent as written), and ``Nats-Msg-Id: <escalation_id>``
so the server drops a resend within its duplicate window (an hour here; consumers
dedupe by escalation_id beyond it).

A batch is published without waiting between messages and then every server ack is
awaited; a missing ack, a lost connection or a server error fails the whole batch,
which the forwarder sends again, over a new connection (the client's own reconnect
loop is off, so a down server costs one refused connect per forwarder retry rather
than a background loop). A message larger than the server accepts is refused for
good.

TLS and credentials come from a NatsAccess (``nats_access``): ``tls://`` servers or
a CA, and a credentials or token file read at each connection. ``connect`` is the
one way here to a server, for the sinks and the feedback service's consumer alike:
it refuses a connection that is not encrypted when TLS was asked for. Servers appear
in logs and errors with any ``user:password@`` replaced by ``***``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Sequence
from functools import partial
from typing import Any

import orjson
import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import Header, PubAck, StreamConfig
from nats.js.errors import Error as JetStreamError

from sidecar.errors import SinkUnavailable
from sidecar.escalation.messages import LabelsOf, with_labels
from sidecar.escalation.sinks.base import Rejection, Spooled
from sidecar.escalation.sinks.nats_access import CleartextRefused, NatsAccess, redacted_servers

log = structlog.get_logger("hitl.forwarder")

DEDUPE_WINDOW_SECONDS = 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # subject tokens and stream names


class NatsUnreachable(ConnectionError):
    """No connection to NATS that may be used: it failed, or it is not encrypted though
    TLS was asked for. The message names the servers (redacted) and the reason."""


async def connect(servers: list[str], access: NatsAccess, timeout: float) -> Client:
    """A connection to servers with access's TLS and credentials, nats-py's own
    reconnect loop off (the caller connects again when it wants to). A connection that
    did not upgrade to the TLS asked for is closed before anything crosses in clear."""
    shown = redacted_servers(servers)
    client = Client()
    try:
        await client.connect(
            servers=servers,
            connect_timeout=max(1, int(timeout)),
            allow_reconnect=False,
            # Counted per server, and 0 would mean for ever: two attempts here.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,  # type: ignore[arg-type] # seconds; nats-py takes a float
            error_cb=_log_error,
            **access.connect_options(servers, partial(_encrypted, client)),
        )
    except (NatsError, OSError, TimeoutError) as exc:
        await _abandon(client, min(timeout, 1.0))
        raise NatsUnreachable(f"NATS {shown}: cannot connect: {_reason(exc)}") from exc
    if access.tls(servers) and not _encrypted(client):
        await client.close()
        raise NatsUnreachable(f"NATS {shown}: the server did not offer TLS")
    return client


def token(text: str) -> str:
    """A NATS subject token or stream-name part: anything but [A-Za-z0-9_-] -> _."""
    return _UNSAFE.sub("_", text) or "_"


class NatsSink:
    name = "nats"

    def __init__(
        self,
        servers: list[str],
        deployment: str,
        timeout: float,
        access: NatsAccess | None = None,
    ) -> None:
        self.servers = servers
        self.shown = redacted_servers(servers)  # for logs and errors
        self._access = access or NatsAccess()
        self.stream = f"HITL_{token(deployment).upper()}"
        self.prefix = f"hitl.{token(deployment)}"
        self._timeout = timeout
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    def subject(self, record: dict[str, Any]) -> str:
        return f"{self.prefix}.{token(str(record['model']))}.{token(str(record['tier']))}"

    def message_id(self, item: Spooled) -> str:
        return item.key

    def payload(self, item: Spooled) -> bytes:
        return item.payload

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]:
        js = await self._jetstream()
        rejected: list[Rejection] = []
        acks: list[asyncio.Future[PubAck]] = []
        try:
            for item in batch:
                try:
                    acks.append(
                        await js.publish_async(
                            self.subject(item.record),
                            self.payload(item),
                            wait_stall=self._timeout,
                            headers={Header.MSG_ID: self.message_id(item)},
                        )
                    )
                except MaxPayloadError as exc:
                    rejected.append(Rejection(item.key, f"NATS: {exc}"))
            async with asyncio.timeout(self._timeout):
                await asyncio.gather(*acks)
        except (NatsError, JetStreamError, TimeoutError, OSError) as exc:
            for ack in acks:
                ack.cancel()
            await self.close()
            raise SinkUnavailable(f"NATS {self.shown}: {type(exc).__name__}: {exc}") from exc
        return rejected

    async def _jetstream(self) -> JetStreamContext:
        if self._js is not None:
            return self._js
        try:
            client = await connect(self.servers, self._access, self._timeout)
        except NatsUnreachable as exc:
            raise SinkUnavailable(str(exc)) from exc
        js = client.jetstream(timeout=self._timeout)
        try:
            await js.add_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.prefix}.>"],
                    duplicate_window=DEDUPE_WINDOW_SECONDS,
                )
            )
        except (NatsError, JetStreamError, TimeoutError) as exc:
            await client.close()
            raise SinkUnavailable(f"NATS {self.shown}: stream {self.stream}: {exc}") from exc
        self._client, self._js = client, js
        return js

    async def close(self) -> None:
        client, self._client, self._js = self._client, None, None
        if client is not None and not client.is_closed:
            await client.close()


class FeedbackNatsSink(NatsSink):
    """Decisions and outcomes for the feedback service, which consumes them from the
    stream: ``HITL_<DEPLOYMENT>_FEEDBACK``, a subject per kind and model
    (``hitl.<deployment>.feedback.<decision|outcome>.<model>``; an escalation's
    record is its decision, with its model's labels), and ``Nats-Msg-Id:
    <kind>-<key>``."""

    name = "feedback-nats"

    def __init__(
        self,
        servers: list[str],
        deployment: str,
        timeout: float,
        labels_of: LabelsOf,
        access: NatsAccess | None = None,
    ) -> None:
        super().__init__(servers, deployment, timeout, access)
        self._labels_of = labels_of
        self.stream = feedback_stream(deployment)
        self.prefix = f"hitl.{token(deployment)}.feedback"

    def subject(self, record: dict[str, Any]) -> str:
        return f"{self.prefix}.{_kind(record)}.{token(str(record['model']))}"

    def message_id(self, item: Spooled) -> str:
        return f"{_kind(item.record)}-{item.key}"

    def payload(self, item: Spooled) -> bytes:
        """A decision's record with its model's labels (``messages.with_labels``)."""
        record = with_labels(item.record, self._labels_of)
        return item.payload if record is item.record else orjson.dumps(record)


def feedback_stream(deployment: str) -> str:
    return f"HITL_{token(deployment).upper()}_FEEDBACK"


def _kind(record: dict[str, Any]) -> str:
    return "outcome" if record.get("kind") == "outcome" else "decision"


def _encrypted(client: Client) -> bool:
    """Whether the server said TLS is required, which nats-py answers by upgrading
    the connection before it sends CONNECT (nats-py has no public accessor)."""
    return bool(client._server_info.get("tls_required"))


async def _abandon(client: Client, timeout: float) -> None:
    """Close a connection that failed half way (a refused certificate or token): its
    socket is closed at once, but waiting for a TLS transport that never finished its
    handshake to report closed can take for ever, so the wait is bounded."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await client.close()


def _reason(exc: BaseException) -> str:
    """Why a connection failed, with the cause nats-py wraps (a refused
    certificate, a refused token) spelt out."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, (CleartextRefused, ssl.SSLError)):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}"


async def _log_error(exc: Exception) -> None:
    log.debug("nats.error", error=f"{type(exc).__name__}: {exc}")
