"""Why the injector refuses a pod.

    HitlError (sidecar.errors)
    └── InjectionRefused      a pod cannot be injected as it is written; the message names
                              the annotation (or field) and what would be accepted

The webhook turns InjectionRefused into a denied AdmissionReview (the pod is not
created and ``kubectl`` shows the message); ``hitl injector render`` exits 2 with it."""

from __future__ import annotations

from sidecar.errors import HitlError


class InjectionRefused(HitlError):
    """A pod's opt-in annotations or spec cannot be injected as written."""
