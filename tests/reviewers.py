"""Principals of the review queue for tests: one of each role, their tokens, and
channels that present a token on every call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import grpc

from sidecar.auth import hash_token, new_token

# name -> roles. "desk" does everything a test harness needs in one principal.
PRINCIPALS: Mapping[str, tuple[str, ...]] = {
    "sidecar-1": ("sidecar",),
    "alice": ("reviewer",),
    "bob": ("reviewer",),
    "lead": ("lead",),
    "viewer": ("viewer",),
    "exporter": ("exporter",),
    "desk": ("sidecar", "lead", "exporter"),
}


class PrincipalStore(Protocol):
    def add_principal(
        self, name: str, roles: frozenset[str], token_sha256: str, cert_subject: str, now: float
    ) -> None: ...


def add_principals(store: PrincipalStore) -> dict[str, str]:
    """Every principal of PRINCIPALS in store; their tokens by name."""
    tokens = {}
    for name, roles in PRINCIPALS.items():
        tokens[name] = new_token()
        store.add_principal(name, frozenset(roles), hash_token(tokens[name]), "", 0.0)
    return tokens


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self._metadata))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """channel, every call on it presenting token."""
    return grpc.intercept_channel(channel, _Bearer(token))
