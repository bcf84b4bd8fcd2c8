"""Decisions and outcomes from NATS JetStream: what sidecars send with
``HITL_FEEDBACK=nats://...`` (``sidecar.escalation.sinks.nats.FeedbackNatsSink``),
taken by a durable pull consumer per deployment's stream and recorded through the
same FeedbackLog as gRPC calls, as the principal ``nats:<stream>`` with the role
``sidecar`` (the stream's own credentials are NATS's to check). It connects as the
sinks do (``sidecar.escalation.sinks.nats.connect``): over TLS and with the
credentials of its NatsAccess, never handing a token to a server that did not
offer the TLS asked for; servers are logged with any ``user:password@`` masked.

A message is acknowledged only after the log has answered for it: a crash before
the ack redelivers it, and the log keeps it once (decisions by request_id, events by
feedback_id). A record the log refuses for good (REJECTED, CONFLICT, unreadable) is
logged, counted and acknowledged, since redelivering cannot mend it; a database
that fails leaves the batch unacknowledged for redelivery. The consumer runs on an
event loop in a thread of its own and reconnects after any failure, with backoff:
it never dies silently: a refused connection (a certificate, a token, no TLS) is a
failure like any other, logged with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import Any

import orjson
import structlog

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal
from sidecar.errors import HitlError, RateLimited, StoreUnavailable
from sidecar.escalation.messages import decision_message, outcome_message
from sidecar.escalation.sinks.nats_access import NatsAccess, redacted_servers
from sidecar.feedback.ingest import REJECTED, FeedbackLog, Result
from sidecar.retry import backoff_delay
from sidecar.supervision import BackgroundThread

log = structlog.get_logger("hitl.feedback")

DURABLE = "hitl-feedback"
BATCH = 256
FETCH_SECONDS = 1.0
REFUSED = (REJECTED, "CONFLICT")
CONNECT_SECONDS = 2.0  # nats-py's own default


class JetStreamConsumer(BackgroundThread):
    def __init__(
        self,
        feedback: FeedbackLog,
        servers: list[str],
        deployments: list[str],
        access: NatsAccess,
    ) -> None:
        from sidecar.escalation.sinks.nats import feedback_stream, token

        super().__init__("feedback-jetstream")  # its state exported with the service's tasks
        self._feedback = feedback
        self._servers = servers
        self._shown = redacted_servers(servers)  # for logs
        self._access = access
        self._streams = {feedback_stream(d): f"hitl.{token(d)}.feedback.>" for d in deployments}
        self.recorded = 0
        self.refused = 0

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        attempt = 0
        rng = random.Random()  # noqa: S311 (jitter, not secrets)
        while not self._stopping.is_set():
            try:
                await self._consume()
                attempt = 0
            except Exception as exc:
                self.state.failures += 1
                self.state.running = False
                attempt += 1
                log.error(
                    "feedback.jetstream_failed", servers=self._shown, error=repr(exc), exc_info=exc
                )
                delay = backoff_delay(attempt, 0.5, 30.0, rng)
                await asyncio.to_thread(self._stopping.wait, delay)
                self.state.running = True

    async def _consume(self) -> None:
        import nats
        from nats.js.api import StreamConfig

        from sidecar.escalation.sinks.nats import DEDUPE_WINDOW_SECONDS, connect

        client = await connect(self._servers, self._access, CONNECT_SECONDS)
        try:
            js = client.jetstream()
            subscriptions = []
            for stream, subjects in self._streams.items():
                # The sidecars' sink creates the stream too; whichever comes first.
                config = StreamConfig(
                    name=stream, subjects=[subjects], duplicate_window=DEDUPE_WINDOW_SECONDS
                )
                await js.add_stream(config)
                subscription = await js.pull_subscribe(subjects, durable=DURABLE, stream=stream)
                subscriptions.append((stream, subscription))
            log.info(
                "feedback.jetstream_consuming", servers=self._shown, streams=sorted(self._streams)
            )
            while not self._stopping.is_set():
                for stream, subscription in subscriptions:
                    with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                        messages = await subscription.fetch(BATCH, timeout=FETCH_SECONDS)
                        await self._take(stream, messages)
        finally:
            await client.close()

    async def _take(self, stream: str, messages: Sequence[Any]) -> None:
        """Record a fetched batch; acknowledge every message the log answered for."""
        principal = Principal(f"nats:{stream}", frozenset({"sidecar"}))
        decisions: list[tuple[Any, fpb.DecisionRecord]] = []
        outcomes: list[tuple[Any, fpb.FeedbackEvent]] = []
        for message in messages:
            try:
                record = orjson.loads(message.data)
                if record.get("kind") == "outcome":
                    outcomes.append((message, outcome_message(record)))
                else:
                    decisions.append((message, decision_message(record)))
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
                self._refuse(message.subject, Result("", REJECTED, "not a decision or outcome"))
                await message.ack()
        try:
            if decisions:
                results = await asyncio.to_thread(
                    self._feedback.record_decisions, principal, [m for _, m in decisions]
                )
                await self._answered(decisions, results)
            if outcomes:
                results = await asyncio.to_thread(
                    self._feedback.record_batch, principal, [m for _, m in outcomes]
                )
                await self._answered(outcomes, results)
        except (StoreUnavailable, RateLimited):
            raise  # unacknowledged: redelivered once the database is back, or later
        except HitlError as exc:  # refused as a whole
            for message, _ in decisions + outcomes:
                self._refuse(message.subject, Result("", REJECTED, str(exc)))
                await message.ack()

    async def _answered(self, sent: Sequence[tuple[Any, Any]], results: Sequence[Result]) -> None:
        for (message, _), result in zip(sent, results, strict=True):
            if result.status in REFUSED:
                self._refuse(message.subject, result)
            else:
                self.recorded += 1
            await message.ack()

    def _refuse(self, subject: str, result: Result) -> None:
        self.refused += 1
        log.error(
            "feedback.jetstream_refused",
            subject=subject,
            key=result.key,
            status=result.status,
            error=result.message,
        )
