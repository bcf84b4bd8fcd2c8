"""AdmissionReview v1 in and out: allowed with a patch, allowed as is, denied, invalid."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from sidecar.injector import annotations as a
from sidecar.injector.admission import BadReview, Outcome, review
from sidecar.injector.config import SidecarDefaults
from tests.unit.injector.pods import admission_review, apply_patch, pod, sidecar_of, validate

DEFAULTS = SidecarDefaults(image="hitl:test", registry="hitl-registry.hitl-system.svc:7433")


def answer(document: dict[str, Any]) -> tuple[dict[str, Any], Outcome]:
    reviewed = review(json.dumps(document).encode(), DEFAULTS)
    assert reviewed.response["apiVersion"] == "admission.k8s.io/v1"
    assert reviewed.response["kind"] == "AdmissionReview"
    assert reviewed.response["response"]["uid"] == document["request"]["uid"]
    return reviewed.response["response"], reviewed.outcome


def test_an_opted_in_pod_gets_a_json_patch() -> None:
    """The response allows the pod with a base64 JSONPatch that yields a valid pod."""
    original = pod()
    response, outcome = answer(admission_review(original))
    assert outcome is Outcome.INJECTED
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patched = apply_patch(original, json.loads(base64.b64decode(response["patch"])))
    validate(patched)
    assert sidecar_of(patched)["image"] == "hitl:test"


def test_a_bad_annotation_denies_the_pod_with_its_name() -> None:
    """A pod that opts in with a wrong annotation is denied, the message naming it."""
    response, outcome = answer(admission_review(pod({a.MODEL: "fraud", a.PORT: "http"})))
    assert outcome is Outcome.REJECTED
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert "hitl.dev/port must be a port number" in response["status"]["message"]
    assert "patch" not in response


def test_a_drain_time_longer_than_the_grace_period_denies_the_pod() -> None:
    """The API server has defaulted terminationGracePeriodSeconds to 30 by the time
    the webhook sees the pod; a drain that does not fit is denied, naming the
    annotation."""
    too_long = pod({a.MODEL: "fraud", a.DRAIN_SECONDS: "40"}, terminationGracePeriodSeconds=30)
    response, outcome = answer(admission_review(too_long))
    assert outcome is Outcome.REJECTED
    assert response["status"]["message"].startswith(
        "hitl sidecar injector: hitl.dev/drain-seconds (40 s) does not fit in the pod's "
        "terminationGracePeriodSeconds (30 s)"
    )


def test_a_statefulset_pod_keeps_its_state_on_its_claim() -> None:
    """A pod the StatefulSet controller created has its claim as a volume by the time
    the webhook sees it: the sidecar mounts it and the pod gets the sidecar's fsGroup."""
    claim = {"name": "hitl-spool", "persistentVolumeClaim": {"claimName": "hitl-spool-fraud-0"}}
    stateful = pod({a.MODEL: "fraud", a.STATE_VOLUME: "hitl-spool"}, volumes=[claim])
    stateful["metadata"] |= {"name": "fraud-0"}
    response, outcome = answer(admission_review(stateful))
    assert outcome is Outcome.INJECTED
    patched = apply_patch(stateful, json.loads(base64.b64decode(response["patch"])))
    validate(patched)
    mounts = {m["mountPath"]: m["name"] for m in sidecar_of(patched)["volumeMounts"]}
    assert mounts["/var/lib/hitl"] == "hitl-spool"
    assert patched["spec"]["securityContext"]["fsGroup"] == 10001


@pytest.mark.parametrize(
    "document",
    [
        admission_review(pod(labels={})),
        admission_review(pod(), operation="UPDATE"),
        {
            **admission_review(pod()),
            "request": {
                **admission_review(pod())["request"],
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            },
        },
    ],
    ids=["not-opted-in", "update", "not-a-pod"],
)
def test_anything_else_is_allowed_unchanged(document: dict[str, Any]) -> None:
    """Pods that do not opt in, updates and other kinds pass without a patch."""
    response, outcome = answer(document)
    assert outcome is Outcome.SKIPPED
    assert response == {"uid": document["request"]["uid"], "allowed": True}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}), "v1"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}), "uid"),
    ],
)
def test_bodies_that_are_not_reviews(body: bytes | str, expected: str) -> None:
    """Anything but an AdmissionReview v1 with a request is a BadReview."""
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(BadReview, match=expected):
        review(raw, DEFAULTS)
