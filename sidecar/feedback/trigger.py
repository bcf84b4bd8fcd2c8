"""Model-update triggers: when a model's newly labelled decisions reach a volume
(``rows``) or the oldest of them an age (``age`` seconds), the service compiles a
dataset snapshot of everything labelled so far (``dataset.compile_dataset``, written
to ``datasets``) and announces it, so that an orchestrator (Airflow, Argo) can
start a retraining or recalibration job from the snapshot it names.

The announcement is JSON: ``{"model", "dataset", "path", "manifest", "rows",
"new_labels", "until"}``. It is published on NATS JetStream (subject
``hitl.model-update.<model>`` of the stream ``HITL_MODEL_UPDATES``) and/or POSTed to
a webhook, signed with HMAC-SHA256 over the body (``X-Hitl-Signature:
sha256=<hex>``) when a key is set. A trigger is recorded (its ``until``: what the
next one counts from) only once every destination has taken it; a destination that
fails is logged, counted, and tried again at the next check."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sidecar.clock import Clock
from sidecar.escalation.sinks.nats_access import NatsAccess
from sidecar.feedback.dataset import Query, compile_dataset, write_dataset
from sidecar.feedback.store import FeedbackStore

log = structlog.get_logger("hitl.feedback")

Publish = Callable[[dict[str, Any]], None]
STREAM = "HITL_MODEL_UPDATES"
SUBJECT = "hitl.model-update"


@dataclass
class ModelUpdates:
    store: FeedbackStore
    clock: Clock
    datasets: Path
    rows: int  # newly labelled decisions that trigger; 0: volume never does
    age: float  # seconds the oldest new label may wait; 0: age never does
    destinations: Sequence[Publish]
    failures: int = 0
    triggered: int = 0

    def check(self) -> list[dict[str, Any]]:
        """Trigger every model that is due; the announcements made."""
        made = []
        for model in self.store.models():
            announcement = self._check(model)
            if announcement is not None:
                made.append(announcement)
        return made

    def _check(self, model: str) -> dict[str, Any] | None:
        now = self.clock.now()
        since = self.store.last_trigger(model)
        count, oldest = self.store.new_labels(model, since)
        by_volume = self.rows > 0 and count >= self.rows
        by_age = self.age > 0 and oldest is not None and now - oldest >= self.age
        if not (by_volume or by_age):
            return None
        dataset = compile_dataset(Query(model, 0.0, now), self.store.labelled(model, 0.0, now))
        data, manifest = write_dataset(self.datasets, dataset)
        announcement = {
            "model": model,
            "dataset": dataset.id,
            "path": str(data),
            "manifest": str(manifest),
            "rows": dataset.manifest["rows"],
            "new_labels": count,
            "until": now,
        }
        for publish in self.destinations:
            try:
                publish(announcement)
            except Exception as exc:  # any destination's failure: tried again next check
                self.failures += 1
                log.error("feedback.trigger_failed", model=model, error=repr(exc))
                return None
        self.store.record_trigger(model, now, dataset.id, dataset.manifest["rows"], now)
        self.triggered += 1
        log.info("feedback.model_update", **announcement)
        return announcement


def webhook(url: str, key: bytes | None, timeout: float = 10.0) -> Publish:
    """POST the announcement as JSON to url, signed with key when there is one."""

    def publish(announcement: dict[str, Any]) -> None:
        body = json.dumps(announcement, sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            digest = hmac.new(key, body, hashlib.sha256).hexdigest()
            headers["X-Hitl-Signature"] = f"sha256={digest}"
        # An http(s) URL: the setting refuses any other scheme at start-up.
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
                return
        except urllib.error.HTTPError as exc:  # an answer other than 2xx
            exc.close()
            raise RuntimeError(f"webhook {url} answered {exc.code}") from None

    return publish


def jetstream(servers: list[str], access: NatsAccess, timeout: float = 10.0) -> Publish:
    """Publish the announcement on NATS JetStream (the stream created when missing),
    over the TLS and as the credentials access gives, as the consumer connects."""

    def publish(announcement: dict[str, Any]) -> None:
        asyncio.run(_publish(servers, access, announcement, timeout))

    return publish


async def _publish(
    servers: list[str], access: NatsAccess, announcement: dict[str, Any], timeout: float
) -> None:
    from nats.js.api import StreamConfig

    from sidecar.escalation.sinks.nats import connect, token

    client = await connect(servers, access, timeout)
    try:
        js = client.jetstream(timeout=timeout)
        await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"]))
        subject = f"{SUBJECT}.{token(announcement['model'])}"
        await js.publish(subject, json.dumps(announcement, sort_keys=True).encode())
    finally:
        await client.close()
