"""AdmissionReview v1 in, AdmissionReview v1 out. No I/O here.

Only the creation of a Pod is ever mutated; anything else the API server sends
(another kind or operation, should the webhook's rules be widened) is allowed as
it is. A pod that opts in but cannot be injected is *denied* with a message that
names the annotation at fault: the pod is not created, and its owner (a ReplicaSet,
say) shows the message in its events. A body that is not an AdmissionReview v1 is
a BadReview: the server answers 400, and the webhook's failure policy decides."""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.injector.config import SidecarDefaults
from sidecar.injector.container import JsonObject
from sidecar.injector.errors import InjectionRefused
from sidecar.injector.patch import plan

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"


class Outcome(enum.Enum):
    INJECTED = "injected"
    SKIPPED = "skipped"
    REJECTED = "rejected"


class BadReview(ValueError):
    """The request body is not an AdmissionReview v1 with a request."""


@dataclass(frozen=True, slots=True)
class Reviewed:
    response: JsonObject
    outcome: Outcome
    pod: str  # namespace/name of the pod, for logs
    message: str  # why it was skipped or rejected


def review(body: bytes, defaults: SidecarDefaults) -> Reviewed:
    """The AdmissionReview response to body; raise BadReview when body is not one."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadReview(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadReview("the body is not a JSON object")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise BadReview(
            f"expected apiVersion {API_VERSION} kind {KIND}, got "
            f"{document.get('apiVersion')!r} {document.get('kind')!r}"
        )
    request = document.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReview("the AdmissionReview has no request with a uid")
    uid = request["uid"]
    pod_object = request.get("object")
    kind = request.get("kind") or {}
    pod = _pod_name(request, pod_object)
    is_pod_create = (
        kind.get("group") == ""
        and kind.get("kind") == "Pod"
        and request.get("operation") == "CREATE"
        and not request.get("subResource")
    )
    if not (is_pod_create and isinstance(pod_object, dict)):
        return Reviewed(_allow(uid), Outcome.SKIPPED, pod, "not the creation of a pod")
    try:
        mutation = plan(pod_object, defaults)
    except InjectionRefused as exc:
        return Reviewed(_deny(uid, str(exc)), Outcome.REJECTED, pod, str(exc))
    if not mutation.patch:
        return Reviewed(_allow(uid), Outcome.SKIPPED, pod, mutation.skipped)
    return Reviewed(_allow(uid, mutation.patch), Outcome.INJECTED, pod, "")


def _allow(uid: str, patch: list[JsonObject] | None = None) -> JsonObject:
    response: JsonObject = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return _envelope(response)


def _deny(uid: str, message: str) -> JsonObject:
    status = {"code": 400, "reason": "BadRequest", "message": f"hitl sidecar injector: {message}"}
    return _envelope({"uid": uid, "allowed": False, "status": status})


def _envelope(response: JsonObject) -> JsonObject:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def _pod_name(request: Mapping[str, Any], pod: Any) -> str:
    metadata = (pod.get("metadata") or {}) if isinstance(pod, dict) else {}
    name = request.get("name") or metadata.get("name") or f"{metadata.get('generateName', '')}*"
    return f"{request.get('namespace') or metadata.get('namespace', '')}/{name}"
