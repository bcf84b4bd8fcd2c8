"""The webhook receiver: Label Studio's ANNOTATION_CREATED and ANNOTATION_UPDATED
calls, on ``POST /webhook``. Label Studio does not sign webhooks; it sends the
custom headers its webhook is given, so the webhook is given
``Authorization: Bearer <secret>`` and this checks it in constant time (missing:
401, wrong: 403; the secret never travels in the URL). The payload only names the
task and annotation: the bridge reads both back from Label Studio's API
(``Bridge.on_webhook``), so a payload is never trusted for their content. The
payload also carries the project's token: nothing here logs a payload.

Other actions are answered 200 and ignored (a webhook sending every action does no
harm). Label Studio unreachable while reading back: 503, and the poll finds the
annotation later. ``GET /healthz`` answers 200."""

from __future__ import annotations

import hmac
import json

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sidecar.labelstudio.bridge import Bridge
from sidecar.labelstudio.metrics import BridgeMetrics

log = structlog.get_logger("hitl.labelstudio")

ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED"})
MAX_BODY_BYTES = 1024 * 1024


def webhook_application(bridge: Bridge, secret: bytes, metrics: BridgeMetrics | None) -> Starlette:
    expected = b"Bearer " + secret

    def count(outcome: str) -> None:
        if metrics is not None:
            metrics.webhooks.add(1, {"outcome": outcome})

    async def webhook(request: Request) -> Response:
        refused = _check(request.headers.get("authorization", "").encode(), expected)
        if refused is not None:
            count(refused[0])
            log.warning("labelstudio.webhook_refused", reason=refused[0], peer=_peer(request))
            return _error(refused[1], refused[2])
        ids = _ids(await request.body())
        if isinstance(ids, str):
            ignored = ids.startswith("ignored")
            count("ignored" if ignored else "invalid")
            return JSONResponse({"result": ids}) if ignored else _error(400, ids)
        try:
            result = await run_in_threadpool(bridge.on_webhook, *ids)
        except Exception as exc:  # Label Studio or the store failing: the poll retries
            count("unavailable")
            log.error("labelstudio.webhook_failed", error=repr(exc), exc_info=exc)
            return _error(503, "Label Studio or the store failed; the poll will retry")
        count("ok")
        return JSONResponse({"result": result})

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhook", webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def _check(given: bytes, expected: bytes) -> tuple[str, int, str] | None:
    """None for the right bearer secret, else the outcome, status and message."""
    if not given.startswith(b"Bearer "):
        return "unauthenticated", 401, "authorization: a Bearer secret is required"
    if not hmac.compare_digest(given, expected):
        return "forbidden", 403, "authorization: wrong secret"
    return None


def _ids(body: bytes) -> tuple[int, int] | str:
    """A payload's task and annotation ids, or what is wrong with it ("ignored: ..."
    for an action the bridge does not act on)."""
    if len(body) > MAX_BODY_BYTES:
        return f"body: larger than {MAX_BODY_BYTES} bytes"
    try:
        payload = json.loads(body)
        action = str(payload.get("action", ""))
    except (ValueError, AttributeError):
        return "body: not a JSON object"
    if action not in ACTIONS:
        return f"ignored: {action or 'no action'}"
    try:
        annotation = payload["annotation"]
        return int(annotation.get("task") or payload["task"]["id"]), int(annotation["id"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return "annotation: needs its id and task"


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""
