"""Signed policies: the registry signs each revision it hands out with Ed25519, and a
sidecar accepts only what verifies against the public key it is configured with.

What is signed is the policy document in canonical JSON (UTF-8, keys sorted, no
whitespace, no NaN), prefixed with a fixed context string so a signature over a
policy can never be mistaken for one over anything else. The verifier checks the
bytes exactly as received and only then parses them, so no two parties ever need to
re-serialise a document identically."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sidecar.errors import ConfigError, SignatureError

CONTEXT = b"hitl.policy.v1\n"


def canonical(document: Mapping[str, Any]) -> bytes:
    """The one byte form of a document that is signed and stored."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.key_id = key_id(private_key.public_key())

    def sign(self, document: bytes) -> bytes:
        return self._key.sign(CONTEXT + document)


class Verifier:
    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self._key = public_key
        self.key_id = key_id(public_key)

    def verify(self, document: bytes, signature: bytes) -> None:
        """Return quietly when signature is this key's over document; else raise
        SignatureError saying why."""
        if not signature:
            raise SignatureError("the policy is unsigned")
        try:
            self._key.verify(signature, CONTEXT + document)
        except InvalidSignature as exc:
            raise SignatureError(
                f"the signature does not verify with key {self.key_id}:"
                " the policy was altered or signed by another key"
            ) from exc


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files (the private one readable by its owner
    only); returns the key id."""
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)
    return key_id(private_key.public_key())


def load_signer(path: Path) -> Signer:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return Signer(key)


def load_verifier(path: Path) -> Verifier:
    try:
        key = serialization.load_pem_public_key(_read(path))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return Verifier(key)


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key {path}: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{path} is not a PEM key")
    return data
