"""What a blocking control-plane servicer does around every call (the review queue,
the feedback service, over gRPC or the feedback service's HTTP): identify the caller
by its credential (``sidecar.auth``), authorise the method for its roles, run the
work for that principal, count the outcome, and answer a refusal or failure with its
status code. A refusal is logged as ``<service>.refused`` with the caller and peer;
an unavailable store or an internal error as ``<service>.failed``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, Protocol, TypeVar

import grpc
import structlog
from opentelemetry.metrics import Counter

from sidecar.auth import Principal, identify
from sidecar.errors import HitlError
from sidecar.serving import caller_credentials, details, status_of

T = TypeVar("T")

REFUSALS = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
FAILURES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


class Principals(Protocol):
    """Who a credential names (a service store)."""

    def principal_for_token(self, token_sha256: str) -> Principal | None: ...

    def principal_for_subject(self, cert_subject: str) -> Principal | None: ...


class Gate:
    """``authorize(principal, method)`` raises PermissionDenied for a method the
    principal's roles do not allow; ``calls`` counts {method, outcome}."""

    def __init__(
        self,
        service: str,
        principals: Principals,
        authorize: Callable[[Principal, str], None],
        calls: Counter | None = None,
    ) -> None:
        self._service = service
        self._principals = principals
        self._authorize = authorize
        self._calls = calls
        self._log = structlog.get_logger(f"hitl.{service}")

    def call(self, context: grpc.ServicerContext, method: str, work: Callable[[Principal], T]) -> T:
        """``admitted`` for a gRPC call: a refusal or failure answers with its status."""
        token, subject = caller_credentials(context)
        try:
            return self.admitted(token, subject, context.peer(), method, work)
        except HitlError as exc:
            self.abort(context, method, exc)

    def admitted(
        self, token: str, subject: str, peer: str, method: str, work: Callable[[Principal], T]
    ) -> T:
        """Identify the caller by its credentials, authorise method for its roles, run
        work for it; count the outcome and log a refusal (any transport: the error is
        the caller's to answer with)."""
        principal: Principal | None = None
        try:
            principal = identify(
                token,
                subject,
                self._principals.principal_for_token,
                self._principals.principal_for_subject,
            )
            self._authorize(principal, method)
            result = work(principal)
        except HitlError as exc:
            code = status_of(exc)
            self._count(method, code.name)
            if code in REFUSALS:
                self._log.warning(
                    f"{self._service}.refused",
                    method=method,
                    code=code.name,
                    principal=principal.name if principal else "",
                    peer=peer,
                    error=str(exc),
                )
            elif code in FAILURES:
                failed = f"{self._service}.failed"
                self._log.error(failed, method=method, code=code.name, error=str(exc))
            raise
        self._count(method, "OK")
        return result

    def guarded(self, context: grpc.ServicerContext, method: str, work: Callable[[], T]) -> T:
        """work's result, or the call answered with its error's status (for what a
        streaming method does after ``call`` let it in); a failure is logged."""
        try:
            return work()
        except HitlError as exc:
            code = status_of(exc)
            if code in FAILURES:
                failed = f"{self._service}.failed"
                self._log.error(failed, method=method, code=code.name, error=str(exc))
            self.abort(context, method, exc)

    def abort(self, context: grpc.ServicerContext, method: str, exc: HitlError) -> NoReturn:
        code = status_of(exc)
        if code in FAILURES:
            self._log.error(
                f"{self._service}.failed", method=method, code=code.name, error=str(exc)
            )
        context.abort(code, details(str(exc)))

    def _count(self, method: str, outcome: str) -> None:
        if self._calls is not None:
            self._calls.add(1, {"method": method, "outcome": outcome})
