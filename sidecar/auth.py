"""Who is calling a hitl service, and whether their roles let them.

Every control-plane service (the registry, the review queue) keeps principals: a
name, roles, and the credentials that prove the name. A caller proves who it is with
a bearer token (``authorization: Bearer <token>`` metadata), of which the service
keeps only the sha256, or with a client certificate when the service serves mTLS
(the certificate's subject common name names the principal). Tokens are 256 random
bits, so one unsalted sha256 is enough to make a stolen database useless for calling
the service. Pure: the store lookup and each service's role table are passed in."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sidecar.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(metadata: Mapping[str, str]) -> str:
    """The token of an ``authorization: Bearer ...`` header ('' when there is none)."""
    value = metadata.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def identify(
    token: str,
    cert_subject: str,
    by_token: Callable[[str], Principal | None],
    by_subject: Callable[[str], Principal | None],
) -> Principal:
    """The principal a bearer token (preferred) or certificate subject belongs to."""
    if token:
        principal = by_token(hash_token(token))
        if principal is None:
            raise Unauthenticated("the bearer token belongs to no principal")
        return principal
    if cert_subject:
        principal = by_subject(cert_subject)
        if principal is None:
            raise Unauthenticated(f"the client certificate {cert_subject!r} names no principal")
        return principal
    raise Unauthenticated(
        "no credentials: send 'authorization: Bearer <token>' or a client certificate"
    )


def authorize(principal: Principal, method: str, allowed: frozenset[str]) -> None:
    """PermissionDenied unless the principal holds one of the roles allowed."""
    if not principal.roles & allowed:
        held = ", ".join(sorted(principal.roles)) or "none"
        raise PermissionDenied(
            f"{principal.name} (roles: {held}) may not call {method}; "
            f"it needs one of: {', '.join(sorted(allowed))}"
        )
