"""A policy as the registry signs it (``SignedPolicy``): verified, then parsed.

The signature is checked over the document bytes exactly as received, before any
byte of it is parsed; only then is the document read as JSON and validated as a
policy. A registry policy names its calibrators by name and sha256 (the artefact is
``<sha256>.onnx`` in the sidecar's artefact directory); a ``path`` would let a
document point outside that directory, so it is refused here."""

from __future__ import annotations

import orjson

from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb
from sidecar.core.policy import Policy, parse_policy
from sidecar.errors import PolicyError
from sidecar.policy.signing import Verifier


def open_signed(signed: rpb.SignedPolicy, verifier: Verifier) -> Policy:
    """The policy in signed; SignatureError when it does not verify, PolicyError
    naming the field when the document is not a registry policy."""
    verifier.verify(signed.document, signed.signature)
    try:
        doc = orjson.loads(signed.document)
    except orjson.JSONDecodeError as exc:
        raise PolicyError("", f"the signed document is not JSON: {exc}") from exc
    policy = parse_policy(doc)
    for name, model in policy.models.items():
        if model.calibrator.path:
            raise PolicyError(
                f"models.{name}.calibrator.path",
                "a policy from the registry names its calibrator by name and sha256",
            )
    return policy
