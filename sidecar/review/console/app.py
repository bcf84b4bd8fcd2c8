"""The console's Starlette application: pages, form actions and the JSON API over the
queue object the gRPC servicer uses. Handlers identify the caller, check the CSRF
token (forms) and the role (``access.check_method``), convert the request to a
queue call and the result to a page; nothing else.

Errors are translated once (``_answer``): a queue error's gRPC status becomes its
HTTP status (``HTTP_STATUS``) and a page (or, under ``/api/``, a JSON object) naming
the field; anything unexpected is logged with its traceback and answered 500 with
no detail. Each action is counted like a gRPC call (``hitl.review.calls``, by method
and outcome) and each refusal logged as ``review.refused`` with ``via=console``.

The queue's calls block on the database, so each request's work runs in a worker
thread, off the server's event loop."""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sidecar.auth import Principal, bearer_token, hash_token, identify
from sidecar.errors import HitlError, InvalidRequest, Unauthenticated
from sidecar.review.access import ReviewRole, check_method, reviewer_for, sees_answers
from sidecar.review.bulk import DEFAULT_LIMIT, MAX_LIMIT, MAX_REASON, BulkFilter
from sidecar.review.config import Networks, ReviewConfig
from sidecar.review.console import view
from sidecar.review.console.fetch import read_text
from sidecar.review.console.inputs import InputView, Shown, content_security_policy, kind_of
from sidecar.review.console.sessions import COOKIE, Session, Sessions, same_token
from sidecar.review.errors import ItemConflict
from sidecar.review.ground_truth import GroundTruth, Known
from sidecar.review.item import TIERS, ItemState, ReviewItem, Verdict
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.quality import QualityReport
from sidecar.review.quality_window import truth_report
from sidecar.review.queue import ReviewQueue
from sidecar.review.records import item_record
from sidecar.review.resolution import ReviewerVerdict
from sidecar.serving import status_of

log = structlog.get_logger("hitl.review")

HERE = Path(__file__).parent
MAX_BODY_BYTES = 64 * 1024  # a form or JSON body (a rationale is at most 16 KiB)
QUEUE_PAGE_ITEMS = 100
QUALITY_WINDOW_SECONDS = 7 * 86400.0
BULK_CHOICES_FROM = MAX_LIMIT  # the bulk form offers the models of this many open items
# A batch's resolutions share one time; its page reads the queue's resolutions from
# then until this much later (room for a database's rounding of the time).
BATCH_SPREAD_SECONDS = 1.0
Fetch = Callable[[str], InputView]

# The HTTP status of each gRPC status the queue's errors name (their grpc_status, read
# by serving.status_of).
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class CsrfRefused(HitlError):
    """A form without the session's CSRF token (403)."""

    field = "csrf_token"


class BodyRefused(HitlError):
    """A body too large, or of a type the endpoint does not read (413 or 415)."""

    field = "body"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Visit:
    """Who is calling and their browser session (new ones are set on the response)."""

    principal: Principal | None
    session: Session
    fresh: bool
    via: str  # "token" (signed in), "proxy" (trusted header), "bearer" (JSON API), ""


@dataclass(frozen=True, slots=True)
class Call:
    """A request as a worker thread handles it: the body already read."""

    request: Request
    form: Mapping[str, str]
    body: Mapping[str, Any]


Handler = Callable[[Call], Response]


class Console:
    """The console for queue, as config says (tests pass a fake fetch); truth: the
    cache of the feedback service's ground truth, when the queue sends to one.
    ``application()`` is its ASGI application."""

    def __init__(
        self,
        queue: ReviewQueue,
        config: ReviewConfig,
        sessions: Sessions,
        metrics: ReviewMetrics | None = None,
        fetch: Fetch = read_text,
        truth: GroundTruth | None = None,
    ) -> None:
        self._queue = queue
        self._truth = truth
        self._store = queue.store
        self._config = config
        self._sessions = sessions
        self._metrics = metrics
        self._fetch = fetch
        self._proxies: Networks = config.console_trusted_proxies
        self._user_header = config.console_user_header.lower()
        self._templates = Jinja2Templates(directory=HERE / "templates")
        self._templates.env.globals["time_left"] = view.time_left
        self._templates.env.globals["iso"] = view.iso
        self._templates.env.globals["label_of"] = view.label_of
        self.csp = content_security_policy(config.console_input_prefixes)

    def application(self) -> ASGIApp:
        routes: list[Route | Mount] = [
            self._get_page("/", self._queue_page, "View"),
            self._get_page("/signin", self._signin_page, "SignIn"),
            self._post_form("/signin", self._signin, "SignIn"),
            self._post_form("/signout", self._signout, "SignOut"),
            self._post_form("/claim", self._claim, "Claim"),
            self._get_page("/items/{escalation_id}", self._item_page, "View"),
            self._post_form("/items/{escalation_id}/resolve", self._resolve, "Resolve"),
            self._post_form("/items/{escalation_id}/release", self._release, "Release"),
            self._post_form("/items/{escalation_id}/revert", self._revert, "Revert"),
            self._get_page("/bulk", self._bulk_page, "BulkAccept"),
            self._post_form("/bulk/accept", self._bulk_accept, "BulkAccept"),
            self._get_page("/bulk/batches/{batch_id}", self._batch_page, "BulkAccept"),
            self._get_page("/quality", self._quality_page, "Quality"),
            self._api_get("/api/quality", self._api_quality, "Quality"),
            self._api_get("/api/items", self._api_items, "View"),
            self._api_post("/api/bulk-accept", self._api_bulk_accept, "BulkAccept"),
            self._api_post("/api/items/{escalation_id}/revert", self._api_revert, "Revert"),
            self._api_post("/api/claim", self._api_claim, "Claim"),
            self._api_post("/api/items/{escalation_id}/resolve", self._api_resolve, "Resolve"),
            self._api_post("/api/items/{escalation_id}/release", self._api_release, "Release"),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_error})
        return _SecurityHeaders(app, self.csp)

    # -- the pages ---------------------------------------------------------------

    def _queue_page(self, call: Call) -> Response:
        visit = self._visit(call.request)
        principal = visit.principal
        if principal is None:
            return self._to_signin(visit)
        check_method(principal, "View")
        query = call.request.query_params
        model, tier = query.get("model", ""), query.get("tier", "")
        items = self._queue.list_items(ItemState.OPEN, model, tier, QUEUE_PAGE_ITEMS)
        held = self._queue.list_items(ItemState.CLAIMED, model, tier, 1000)
        lead = principal.has(ReviewRole.LEAD)
        adjudication = self._queue.list_items(ItemState.ADJUDICATION, model, tier, 1000)
        context = {
            "items": items,
            # Items whose reviewers disagreed: a lead's to claim and resolve.
            "adjudication": adjudication if lead or _may(principal, "List") else [],
            "can_adjudicate": lead,
            "mine": [item for item in held if item.claimed_by == principal.name],
            "model": model,
            "tier": tier,
            "tiers": TIERS,
            "done": query.get("done", ""),
            "can_claim": _may(principal, "Claim"),
            "can_bulk": _may(principal, "BulkAccept"),
        }
        return self._page(call.request, visit, "queue.html", context)

    def _item_page(self, call: Call) -> Response:
        visit = self._visit(call.request)
        principal = visit.principal
        if principal is None:
            return self._to_signin(visit)
        check_method(principal, "View")
        item = self._queue.get(call.request.path_params["escalation_id"])
        shown = self._shown(item.escalation.input_ref)
        now = self._queue.now()
        e = item.escalation
        context = {
            "item": item,
            "e": e,
            "shown": shown,
            "top": view.top_classes(e),
            "options": view.class_options(e),
            "predicted": view.label_of(e, e.predicted_class) if e.predicted_class >= 0 else "",
            "history": view.history(
                item,
                self._queue.sla,
                self._store.history(item.escalation_id),
                self._queue.reverts(item.escalation_id),
                blind_for="" if sees_answers(principal) else principal.name,
            ),
            "acting_for": self._acting_for(principal, item),
            "can_act": self._can_act(principal, item),
            "can_revert": item.resolution is not None and _may(principal, "Revert"),
            "reason_max": MAX_REASON,
            "batch": view.batch_of(item.resolution) if item.resolution else {},
            "reverted": call.request.query_params.get("reverted", "") == "1",
            # Other reviewers' answers: never for a reviewer (they answer blind).
            "answers": item.answers if sees_answers(principal) else (),
            "evidence": self._sessions.seal(view.evidence(item, shown, now)),
            "rationale": self._config.rationale_required,
            "probabilities_from": "as sent" if e.input_kind == "PROBABILITIES" else "softmax",
        }
        return self._page(call.request, visit, "item.html", context)

    def _bulk_page(self, call: Call) -> Response:
        """A lead's bulk accept form; with ``preview``, the items it would accept (a
        dry run) and the form that accepts them, carrying the preview sealed."""
        visit = self._visit(call.request)
        principal = visit.principal
        if principal is None:
            return self._to_signin(visit)
        check_method(principal, "BulkAccept")
        query = call.request.query_params
        models, rules = view.choices(
            self._queue.list_items(ItemState.OPEN, "", "", BULK_CHOICES_FROM)
        )
        context: dict[str, Any] = {
            "models": models,
            "rules": rules,
            "tiers": TIERS,
            "asked": query,
            "default_limit": DEFAULT_LIMIT,
            "max_limit": MAX_LIMIT,
            "previewed": None,
        }
        if query.get("preview", ""):
            wanted = _bulk_filter(query)
            previewed = self._queue.bulk_accept(principal, wanted, dry_run=True).items
            only = tuple(item.escalation_id for item in previewed)
            sealed = {"filter": asdict(replace(wanted, limit=len(previewed), only=only))}
            context |= {
                "wanted": wanted,
                "previewed": previewed,
                "preview": self._sessions.seal_preview(sealed) if previewed else "",
            }
        return self._page(call.request, visit, "bulk.html", context)

    def _batch_page(self, call: Call) -> Response:
        """A bulk accept's batch: each item it resolved that has not been reverted
        since. ``model`` and ``at`` (when it ran, Unix seconds) say where the queue's
        resolutions of the batch start."""
        visit = self._visit(call.request)
        principal = visit.principal
        if principal is None:
            return self._to_signin(visit)
        check_method(principal, "BulkAccept")
        batch_id = call.request.path_params["batch_id"]
        query = call.request.query_params
        at = _moment(query.get("at", ""), "at", 0.0)
        found: list[tuple[ReviewItem, dict[str, Any]]] = []
        for item in self._queue.export(query.get("model", ""), since=at):
            resolution = item.resolution
            assert resolution is not None  # export yields resolved items only
            if resolution.resolved_at > at + BATCH_SPREAD_SECONDS:
                break
            batch = view.batch_of(resolution)
            if batch.get("batch_id") == batch_id:
                found.append((item, batch))
        context = {
            "batch_id": batch_id,
            "items": [item for item, _ in found],
            "batch_filter": found[0][1] if found else {},
            "at": at,
            "previewed": _integer(query.get("previewed", "") or "0", "previewed"),
        }
        return self._page(call.request, visit, "batch.html", context)

    def _signin_page(self, call: Call) -> Response:
        visit = self._visit(call.request)
        if visit.principal is not None:
            return self._redirect("/", visit)
        return self._page(call.request, visit, "signin.html", {})

    # -- form actions ------------------------------------------------------------

    def _signin(self, call: Call) -> Response:
        visit = self._visit(call.request)
        self._check_csrf(visit, call.form)
        token = call.form.get("token", "").strip()
        if not token:
            raise InvalidRequest("token", "is required: paste your review queue token")
        principal = self._store.principal_for_token(hash_token(token))
        if principal is None:
            raise Unauthenticated("token: belongs to no principal of this queue")
        session = self._sessions.new(hash_token(token))
        log.info("review.console_signed_in", principal=principal.name, peer=_peer(call.request))
        return self._redirect("/", Visit(principal, session, True, "token"))

    def _signout(self, call: Call) -> Response:
        visit = self._visit(call.request)
        self._check_csrf(visit, call.form)
        return self._redirect("/signin", Visit(None, self._sessions.new(), True, ""))

    def _claim(self, call: Call) -> Response:
        visit, principal = self._acting(call, "Claim")
        reviewer, acted_by = reviewer_for(principal, call.form.get("for", ""))
        lead = principal.has(ReviewRole.LEAD)
        item = self._queue.claim(reviewer, call.form.get("model", ""), 0.0, acted_by, lead)
        return self._redirect(f"/items/{item.escalation_id}", visit)

    def _resolve(self, call: Call) -> Response:
        visit, principal = self._acting(call, "Resolve")
        escalation_id = call.request.path_params["escalation_id"]
        reviewer, acted_by = reviewer_for(principal, call.form.get("for", ""))
        form = call.form
        verdict = _verdict(form.get("verdict", ""))
        corrected = None
        if verdict is Verdict.OVERRIDE:
            corrected = _class(form.get("corrected_class", ""))
        evidence = self._sessions.unseal(form.get("evidence", ""), escalation_id)
        measured = _seconds(form.get("time_to_label_seconds", ""))
        self._queue.resolve(
            replace(
                self._verdict(
                    escalation_id,
                    reviewer,
                    acted_by,
                    verdict,
                    corrected,
                    "",
                    form,
                    measured,
                    evidence,
                ),
                lead=principal.has(ReviewRole.LEAD) and not acted_by,
            )
        )
        return self._redirect(f"/?done={escalation_id}", visit)

    def _release(self, call: Call) -> Response:
        visit, principal = self._acting(call, "Release")
        reviewer, acted_by = reviewer_for(principal, call.form.get("for", ""))
        self._queue.release(call.request.path_params["escalation_id"], reviewer, acted_by)
        return self._redirect("/", visit)

    def _bulk_accept(self, call: Call) -> Response:
        """Accept what the sealed preview listed, those items only, once a dry run
        finds every one of them still to be taken (else 409: preview again); then show
        the batch (a redirect: reloading it accepts nothing)."""
        visit, principal = self._acting(call, "BulkAccept")
        sealed = self._sessions.unseal_preview(call.form.get("preview", ""))
        wanted = _previewed(sealed)
        now_listed = self._queue.bulk_accept(principal, wanted, dry_run=True).items
        if len(now_listed) != len(wanted.only):
            raise ItemConflict(
                "preview: the queue has changed since (an item was claimed or resolved):"
                " preview again"
            )
        done = self._queue.bulk_accept(principal, wanted)
        resolved = [item.resolution.resolved_at for item in done.items if item.resolution]
        at = min(resolved, default=self._queue.now())
        to = f"/bulk/batches/{done.batch_id}?" + urlencode(
            {"model": wanted.model, "at": repr(at), "previewed": wanted.limit}
        )
        return self._redirect(to, visit)

    def _revert(self, call: Call) -> Response:
        visit, principal = self._acting(call, "Revert")
        escalation_id = call.request.path_params["escalation_id"]
        self._queue.revert(principal, escalation_id, call.form.get("reason", ""))
        return self._redirect(f"/items/{escalation_id}?reverted=1", visit)

    # -- the JSON API (a bearer token; no cookie, so no CSRF) ----------------------

    def _api_items(self, call: Call) -> Response:
        principal = self._bearer(call.request, "View")
        query = call.request.query_params
        state = _state(query.get("state", ""))
        limit = _integer(query.get("limit", "0") or "0", "limit")
        items = self._queue.list_items(state, query.get("model", ""), query.get("tier", ""), limit)
        now = self._queue.now()
        shown = sees_answers(principal)
        return JSONResponse({"items": [item_record(item, now, shown) for item in items]})

    def _quality_page(self, call: Call) -> Response:
        visit = self._visit(call.request)
        if visit.principal is None:
            return self._to_signin(visit)
        check_method(visit.principal, "Quality")
        report, known = self._quality(call.request)
        context = {"report": report.as_json(), "truth": known.as_json()}
        return self._page(call.request, visit, "quality.html", context)

    def _api_quality(self, call: Call) -> Response:
        self._bearer(call.request, "Quality")
        report, known = self._quality(call.request)
        return JSONResponse({**report.as_json(), "ground_truth": known.as_json()})

    def _quality(self, request: Request) -> tuple[QualityReport, Known]:
        """Reviewer quality over the resolutions of ``[since, until)`` (Unix seconds;
        default: the last 7 days up to now), with the ground truth the cache holds
        (never a call to the feedback service)."""
        query = request.query_params
        until = _moment(query.get("until", ""), "until", self._queue.now())
        since = _moment(query.get("since", ""), "since", until - QUALITY_WINDOW_SECONDS)
        if not since < until:
            raise InvalidRequest("since", f"must be before until ({since:g} >= {until:g})")
        return truth_report(self._queue, since, until, query.get("model", ""), self._truth)

    def _api_claim(self, call: Call) -> Response:
        principal = self._bearer(call.request, "Claim")
        body = call.body
        reviewer, acted_by = reviewer_for(principal, _text(body, "reviewer"))
        lease = _number(body.get("lease_seconds", 0.0), "lease_seconds")
        lead = principal.has(ReviewRole.LEAD)
        item = self._queue.claim(reviewer, _text(body, "model"), lease, acted_by, lead)
        return JSONResponse(item_record(item, self._queue.now(), sees_answers(principal)))

    def _api_resolve(self, call: Call) -> Response:
        principal = self._bearer(call.request, "Resolve")
        body = call.body
        reviewer, acted_by = reviewer_for(principal, _text(body, "reviewer"))
        verdict = _verdict(_text(body, "verdict"))
        raw_class = body.get("corrected_class")
        if raw_class is not None and type(raw_class) is not int:
            raise InvalidRequest("corrected_class", "must be a class index (an integer)")
        evidence = body.get("evidence", {})
        if not isinstance(evidence, dict):
            raise InvalidRequest("evidence", "must be a JSON object")
        measured = _number(body.get("time_to_label_seconds", 0.0), "time_to_label_seconds")
        fields = {"rationale": _text(body, "rationale")}
        answer = self._verdict(
            call.request.path_params["escalation_id"],
            reviewer,
            acted_by,
            verdict,
            raw_class,
            _text(body, "corrected_label"),
            fields,
            measured,
            json.dumps(evidence, sort_keys=True, separators=(",", ":")) if evidence else "",
        )
        item = self._queue.resolve(
            replace(answer, lead=principal.has(ReviewRole.LEAD) and not acted_by)
        )
        return JSONResponse(item_record(item, self._queue.now(), sees_answers(principal)))

    def _api_release(self, call: Call) -> Response:
        principal = self._bearer(call.request, "Release")
        reviewer, acted_by = reviewer_for(principal, _text(call.body, "reviewer"))
        item = self._queue.release(call.request.path_params["escalation_id"], reviewer, acted_by)
        return JSONResponse(item_record(item, self._queue.now(), sees_answers(principal)))

    def _api_bulk_accept(self, call: Call) -> Response:
        principal = self._bearer(call.request, "BulkAccept")
        body = call.body
        wanted = BulkFilter(
            model=_text(body, "model"),
            min_confidence=_number(body.get("min_confidence"), "min_confidence"),
            rule_id=_text(body, "rule_id"),
            tier=_text(body, "tier"),
            limit=int(_number(body.get("limit", DEFAULT_LIMIT), "limit")),
        )
        dry_run = body.get("dry_run", False) is True
        done = self._queue.bulk_accept(principal, wanted, dry_run)
        now = self._queue.now()
        return JSONResponse(
            {
                "batch_id": done.batch_id,
                "dry_run": done.dry_run,
                "items": [item_record(item, now, True) for item in done.items],
            }
        )

    def _api_revert(self, call: Call) -> Response:
        principal = self._bearer(call.request, "Revert")
        escalation_id = call.request.path_params["escalation_id"]
        item = self._queue.revert(principal, escalation_id, _text(call.body, "reason"))
        return JSONResponse(item_record(item, self._queue.now(), True))

    # -- what every handler shares -------------------------------------------------

    def _verdict(
        self,
        escalation_id: str,
        reviewer: str,
        acted_by: str,
        verdict: Verdict,
        corrected_class: int | None,
        corrected_label: str,
        form: Mapping[str, str],
        measured: float,
        evidence: str,
    ) -> ReviewerVerdict:
        """The verdict asked for, under the console's rationale rule, its time to label
        clamped to [0, claim-to-now] (a page cannot have been shown before its claim)."""
        rationale = form.get("rationale", "").strip()
        rule = self._config.rationale_required
        if not rationale and (
            rule == "always" or (rule == "override" and verdict is Verdict.OVERRIDE)
        ):
            needed = "every verdict" if rule == "always" else "an override"
            raise InvalidRequest("rationale", f"is required on {needed}: say why")
        item = self._queue.get(escalation_id)
        if item.claimed_by:
            measured = min(measured, max(0.0, self._queue.now() - item.claimed_at))
        return ReviewerVerdict(
            escalation_id=escalation_id,
            reviewer=reviewer,
            verdict=verdict,
            corrected_class=corrected_class,
            corrected_label=corrected_label,
            rationale=rationale,
            time_to_label_seconds=measured,
            acted_by=acted_by,
            evidence=evidence,
        )

    def _visit(self, request: Request) -> Visit:
        """Who the browser is: the trusted proxy's user, or the session's principal."""
        visit = self._identify(request)
        request.state.principal = visit.principal
        return visit

    def _identify(self, request: Request) -> Visit:
        found = self._sessions.decode(request.cookies.get(COOKIE, ""))
        session = found or self._sessions.new()
        named = request.headers.get(self._user_header, "")
        if named and self._from_proxy(request):
            return Visit(self._named(named), session, found is None, "proxy")
        if session.token_sha256:
            holder = self._store.principal_for_token(session.token_sha256)
            if holder is not None:
                return Visit(holder, session, False, "token")
            session = self._sessions.new()  # its token was replaced or removed
            return Visit(None, session, True, "")
        return Visit(None, session, found is None, "")

    def _named(self, name: str) -> Principal:
        for principal in self._store.principals():
            if principal.name == name:
                return principal
        raise Unauthenticated(
            f"{self._config.console_user_header}: {name!r} names no principal of this queue"
        )

    def _from_proxy(self, request: Request) -> bool:
        if request.client is None or not self._proxies:
            return False
        try:
            peer = ipaddress.ip_address(request.client.host)
        except ValueError:
            return False
        return any(peer in network for network in self._proxies)

    def _acting(self, call: Call, method: str) -> tuple[Visit, Principal]:
        """A form action's caller: signed in, with the session's CSRF token, and a
        role that allows method."""
        visit = self._visit(call.request)
        self._check_csrf(visit, call.form)
        if visit.principal is None:
            raise Unauthenticated("not signed in: sign in first")
        check_method(visit.principal, method)
        return visit, visit.principal

    def _check_csrf(self, visit: Visit, form: Mapping[str, str]) -> None:
        if visit.fresh or not same_token(form.get("csrf_token", ""), visit.session.csrf):
            raise CsrfRefused(
                "csrf_token: missing or stale (this form is not from your current session);"
                " reload the page and try again"
            )

    def _bearer(self, request: Request, method: str) -> Principal:
        token = bearer_token({"authorization": request.headers.get("authorization", "")})
        principal = identify(
            token, "", self._store.principal_for_token, self._store.principal_for_subject
        )
        request.state.principal = principal
        check_method(principal, method)
        return principal

    def _shown(self, ref: str) -> InputView:
        kind = kind_of(ref, self._config.console_input_prefixes)
        if kind is Shown.TEXT:
            return self._fetch(ref)
        return InputView(ref, kind)

    def _acting_for(self, principal: Principal, item: ReviewItem) -> str:
        """The holder a lead acts for on another's claim ('' for one's own)."""
        if item.claimed_by and item.claimed_by != principal.name:
            return item.claimed_by if principal.has(ReviewRole.LEAD) else ""
        return ""

    def _can_act(self, principal: Principal, item: ReviewItem) -> bool:
        if item.resolution is not None or not item.claimed_by or not _may(principal, "Resolve"):
            return False
        return item.claimed_by == principal.name or principal.has(ReviewRole.LEAD)

    def _page(
        self,
        request: Request,
        visit: Visit,
        template: str,
        context: dict[str, Any],
        status: int = 200,
    ) -> Response:
        context = {
            "principal": visit.principal,
            "via": visit.via,
            "csrf": visit.session.csrf,
            "now": self._queue.now(),
            **context,
        }
        response = self._templates.TemplateResponse(request, template, context, status)
        response.headers["cache-control"] = "no-store"
        return self._keep(response, visit)

    def _redirect(self, to: str, visit: Visit) -> Response:
        return self._keep(RedirectResponse(to, status_code=303), visit)

    def _to_signin(self, visit: Visit) -> Response:
        return self._redirect("/signin", visit)

    def _keep(self, response: Response, visit: Visit) -> Response:
        if visit.fresh:
            response.set_cookie(
                COOKIE, self._sessions.encode(visit.session), **self._sessions.cookie_options()
            )
        return response

    # -- the route table: a page or form for people, JSON for scripts -------------

    def _get_page(self, path: str, handler: Handler, method: str) -> Route:
        """A page read with GET."""
        return Route(path, self._endpoint(handler, method), methods=["GET"])

    def _post_form(self, path: str, handler: Handler, method: str) -> Route:
        """A form posted from a page."""
        return Route(path, self._endpoint(handler, method, "form"), methods=["POST"])

    def _api_get(self, path: str, handler: Handler, method: str) -> Route:
        """JSON read with GET."""
        return Route(path, self._endpoint(handler, method, api=True), methods=["GET"])

    def _api_post(self, path: str, handler: Handler, method: str) -> Route:
        """A JSON body posted, answered with JSON."""
        return Route(path, self._endpoint(handler, method, "json", api=True), methods=["POST"])

    def _endpoint(
        self, handler: Handler, method: str, body: str = "", *, api: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                call = Call(request, *await _read(request, body))
                response = await run_in_threadpool(handler, call)
            except HitlError as exc:
                return await run_in_threadpool(self._answer, request, method, exc, api)
            except Exception:
                log.exception("review.console_failed", method=method, path=request.url.path)
                self._count(method, "INTERNAL")
                return self._failure(request, 500, "internal error (logged)", api)
            self._count(method, "OK")
            return response

        return endpoint

    def _answer(self, request: Request, method: str, exc: HitlError, api: bool) -> Response:
        """A HitlError as its HTTP status and a page (or JSON) naming the field."""
        if isinstance(exc, CsrfRefused):
            status, code = 403, "PERMISSION_DENIED"
        elif isinstance(exc, BodyRefused):
            status, code = exc.status, "INVALID_ARGUMENT"
        else:
            grpc_code = status_of(exc)
            status, code = HTTP_STATUS.get(grpc_code, 500), grpc_code.name
        self._count(method, code)
        principal = getattr(request.state, "principal", None)
        if code in {c.name for c in REFUSALS} or isinstance(exc, CsrfRefused):
            log.warning(
                "review.refused",
                via="console",
                method=method,
                code=code,
                principal=principal.name if principal else "",
                peer=_peer(request),
                error=str(exc),
            )
        elif status >= 500:
            log.error("review.failed", via="console", method=method, code=code, error=str(exc))
        return self._failure(request, status, str(exc), api, getattr(exc, "field", ""))

    def _failure(
        self, request: Request, status: int, message: str, api: bool, field: str = ""
    ) -> Response:
        if api:
            error = {"status": status, "field": field, "message": message}
            return JSONResponse({"error": error}, status_code=status)
        visit = self._quiet_visit(request)
        context = {"status": status, "message": message, "field": field}
        return self._page(request, visit, "error.html", context, status)

    def _quiet_visit(self, request: Request) -> Visit:
        """The visit for an error page, without raising again (the store may be down)."""
        try:
            return self._visit(request)
        except HitlError:
            return Visit(None, self._sessions.new(), False, "")

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        api = request.url.path.startswith("/api/")
        message = exc.detail or "not found"
        return await run_in_threadpool(self._failure, request, exc.status_code, message, api)

    def _count(self, method: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.calls.add(1, {"method": f"console.{method}", "outcome": outcome})


class _SecurityHeaders:
    """Every response with the console's Content-Security-Policy and the headers that
    keep a browser from framing, sniffing or leaking it."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self._app = app
        self._headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        await self._app(scope, receive, with_headers)


async def _read(request: Request, kind: str) -> tuple[dict[str, str], dict[str, Any]]:
    """(form, JSON body) of a request, as kind says to read it; BodyRefused when it is
    larger than MAX_BODY_BYTES or not of that kind, InvalidRequest naming ``body``
    when it does not parse."""
    if not kind:
        return {}, {}
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        raise BodyRefused(f"body: at most {MAX_BODY_BYTES} bytes, with a Content-Length", 413)
    if int(declared) == 0:
        return {}, {}
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "form":
        if media != "application/x-www-form-urlencoded":
            raise BodyRefused("body: send the form as application/x-www-form-urlencoded", 415)
        form = await request.form(max_files=0, max_fields=50)
        return {key: value for key, value in form.items() if isinstance(value, str)}, {}
    if media != "application/json":
        raise BodyRefused("body: send a JSON object as application/json", 415)
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidRequest("body", f"is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return {}, body


def _bulk_filter(fields: Mapping[str, str]) -> BulkFilter:
    """The bulk accept a lead's form asks for (the queue checks the values' ranges);
    InvalidRequest naming the field that is not a number."""
    return BulkFilter(
        model=fields.get("model", ""),
        min_confidence=_fraction(fields.get("min_confidence", "").strip(), "min_confidence"),
        rule_id=fields.get("rule_id", "").strip(),
        tier=fields.get("tier", ""),
        limit=_integer(fields.get("limit", "").strip() or "0", "limit"),
    )


def _previewed(sealed: Mapping[str, Any]) -> BulkFilter:
    """The bulk accept a sealed preview stands for, limited to the items it listed."""
    try:
        fields = sealed["filter"]
        wanted = BulkFilter(**{**fields, "only": tuple(fields["only"])})
    except (KeyError, TypeError):
        raise InvalidRequest("preview", "altered: preview again") from None
    if wanted.limit < 1:
        raise InvalidRequest("preview", "listed no items: there is nothing to accept")
    return wanted


def _fraction(text: str, field: str) -> float:
    """A form's number (its range is the queue's to check); InvalidRequest naming field."""
    if not text:
        raise InvalidRequest(field, "is required: a calibrated confidence from 0 to 1, e.g. 0.97")
    try:
        return float(text)
    except ValueError:
        raise InvalidRequest(field, f"must be a number from 0 to 1, got {text!r}") from None


def _may(principal: Principal, method: str) -> bool:
    try:
        check_method(principal, method)
    except HitlError:
        return False
    return True


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def _verdict(value: str) -> Verdict:
    try:
        return Verdict(value.upper())
    except ValueError:
        raise InvalidRequest("verdict", f"must be ACCEPT or OVERRIDE, got {value!r}") from None


def _class(value: str) -> int:
    if not value.strip():
        raise InvalidRequest("corrected_class", "is required on an override: choose the class")
    return _integer(value, "corrected_class")


def _integer(value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(field, f"must be an integer, got {value!r}") from None


def _seconds(value: str) -> float:
    """A measured time to label as the form sent it ('' or junk: 0, the queue's own)."""
    try:
        seconds = float(value) if value else 0.0
    except ValueError:
        raise InvalidRequest("time_to_label_seconds", f"must be seconds, got {value!r}") from None
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _moment(text: str, field: str, default: float) -> float:
    """A query's Unix time (default when empty); InvalidRequest naming the field."""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(field, f"must be Unix seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest(field, f"must be Unix seconds, got {text!r}")
    return value


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(field, f"must be a number, got {value!r}")
    return float(value)


def _text(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field, "")
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {value!r}")
    return value


def _state(value: str) -> ItemState | None:
    if not value:
        return None
    try:
        return ItemState(value.upper())
    except ValueError:
        raise InvalidRequest("state", "must be open, claimed or resolved") from None
