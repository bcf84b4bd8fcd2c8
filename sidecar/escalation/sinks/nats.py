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
good."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import nats
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

log = structlog.get_logger("hitl.forwarder")

DEDUPE_WINDOW_SECONDS = 3600.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # subject tokens and stream names


def token(text: str) -> str:
    """A NATS subject token or stream-name part: anything but [A-Za-z0-9_-] -> _."""
    return _UNSAFE.sub("_", text) or "_"


class NatsSink:
    name = "nats"

    def __init__(self, servers: list[str], deployment: str, timeout: float) -> None:
        self.servers = servers
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
            raise SinkUnavailable(f"NATS {self.servers}: {type(exc).__name__}: {exc}") from exc
        return rejected

    async def _jetstream(self) -> JetStreamContext:
        if self._js is not None:
            return self._js
        try:
            client = await nats.connect(
                servers=self.servers,
                connect_timeout=max(1, int(self._timeout)),
                allow_reconnect=False,
                # Counted per server, and 0 would mean for ever: two attempts here.
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_log_error,
            )
        except (NatsError, OSError, TimeoutError) as exc:
            raise SinkUnavailable(f"NATS {self.servers}: cannot connect: {exc}") from exc
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
            raise SinkUnavailable(f"NATS {self.servers}: stream {self.stream}: {exc}") from exc
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
        self, servers: list[str], deployment: str, timeout: float, labels_of: LabelsOf
    ) -> None:
        super().__init__(servers, deployment, timeout)
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


async def _log_error(exc: Exception) -> None:
    log.debug("nats.error", error=f"{type(exc).__name__}: {exc}")
