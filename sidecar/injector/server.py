"""The webhook's HTTP application: ``POST /mutate`` answers AdmissionReviews, ``GET
/healthz`` and ``GET /readyz`` answer probes (readyz turns 503 while the server drains
on SIGTERM, so the Service stops sending before it closes).

A Starlette application, served over TLS by uvicorn (``app``): the API server's
connections are kept alive between reviews, and a slow client's handshake or body
never holds up another's."""

from __future__ import annotations

import time
from http import HTTPStatus

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sidecar.injector.admission import BadReview, Outcome, review
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.metrics import INVALID, InjectorMetrics

log = structlog.get_logger("hitl.injector")

MUTATE_PATH = "/mutate"
MAX_BODY_BYTES = 8 * 2**20  # the API server sends at most a few MiB per object


class Readiness:
    """Whether /readyz says ready: set once serving, cleared when draining starts."""

    def __init__(self) -> None:
        self.ready = False


def webhook(defaults: SidecarDefaults, metrics: InjectorMetrics, readiness: Readiness) -> Starlette:
    """The webhook's routes; any other path or method is answered as JSON, too."""

    async def mutate(request: Request) -> JSONResponse:
        client = request.client.host if request.client else ""
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return _invalid(
                metrics, client, f"Content-Length must be given and at most {MAX_BODY_BYTES}"
            )
        body = await request.body()
        started = time.perf_counter()
        try:
            reviewed = review(body, defaults)
        except BadReview as exc:
            return _invalid(metrics, client, str(exc))
        metrics.record(reviewed.outcome.value, (time.perf_counter() - started) * 1000.0)
        if reviewed.outcome is Outcome.SKIPPED:
            log.debug("injector.skipped", pod=reviewed.pod, reason=reviewed.message)
        elif reviewed.outcome is Outcome.REJECTED:
            log.warning("injector.rejected", pod=reviewed.pod, reason=reviewed.message)
        else:
            log.info("injector.injected", pod=reviewed.pod)
        return JSONResponse(reviewed.response)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        if readiness.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "draining"}, HTTPStatus.SERVICE_UNAVAILABLE)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", HTTPStatus.NOT_FOUND)
        return JSONResponse({"error": f"no {request.method} {request.url.path}"}, status)

    return Starlette(
        routes=[
            Route(MUTATE_PATH, mutate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={
            HTTPStatus.NOT_FOUND: not_found,
            HTTPStatus.METHOD_NOT_ALLOWED: not_found,
        },
    )


def _invalid(metrics: InjectorMetrics, client: str, message: str) -> JSONResponse:
    metrics.record(INVALID, 0.0)
    log.warning("injector.invalid_request", client=client, error=message)
    return JSONResponse({"error": message}, HTTPStatus.BAD_REQUEST)
