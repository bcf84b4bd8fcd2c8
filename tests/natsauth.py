"""NATS decentralised auth for tests: an operator, a system account and an account
with JetStream, their JWTs signed with fresh NKeys (``nkeys``), the nats-server
configuration that trusts them (a memory resolver), and a user's ``.creds`` file,
as ``nsc generate creds`` writes it. JWTs follow nats-io/jwt v2: an ed25519-nkey
header, claims with a jti (the base32 SHA-512/256 of the claims without it), signed
by the issuer's key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]  # nkeys ships no type hints

UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Key:
    seed: bytes
    public: str

    def sign(self, data: bytes) -> bytes:
        return bytes(nkeys.from_seed(bytearray(self.seed)).sign(data))


def new_key(prefix: int) -> Key:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return Key(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: Key, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public,
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    signed = f"{header}.{_b64(json.dumps(claims).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


@dataclass(frozen=True)
class Operator:
    """An operator with a system account and the account HITL (JetStream on)."""

    config: str  # nats-server configuration text trusting them
    account: Key

    def user_creds(self, path: Path, name: str) -> Path:
        """A new user of the account HITL, as a .creds file at path."""
        user = new_key(nkeys.PREFIX_BYTE_USER)
        token = jwt(self.account, user.public, name, {"type": "user", **UNLIMITED})
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{token}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.seed.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        return path


def operator() -> Operator:
    op = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    system = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    account = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    limits = {**UNLIMITED}
    accounts = {
        system.public: jwt(op, system.public, "SYS", {"type": "account", "limits": limits}),
        account.public: jwt(
            op, account.public, "HITL", {"type": "account", "limits": {**limits, **JETSTREAM}}
        ),
    }
    preload = "\n".join(f"  {key}: {token}" for key, token in accounts.items())
    config = (
        f"operator: {jwt(op, op.public, 'hitl-test', {'type': 'operator'})}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n{preload}\n}}\n"
    )
    return Operator(config, account)
