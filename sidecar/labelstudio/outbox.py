"""Resolutions to the feedback service, as the review queue's are: each resolved
task becomes the REVIEW event ``review.outbox.review_event`` builds for the review
queue's item, with ``labelstudio`` as its source; sent a batch at a time, each
marked sent once the service has answered for it; a refusal for good is logged and
marked; the service unreachable, nothing is marked and the next run retries.

An annotation updated after its resolution was sent corrects it, as a lead's revert
and a new resolution do in the queue: first the RETRACTION of the sent one
(``review.outbox.retraction_event``), then the new one, ``review-<escalation_id>-<n>``
naming the one it supersedes; the store holds a correction's resolution back until
its retraction is marked sent. Every ``feedback_id`` is fixed by what it is, so a
batch sent twice is recorded once."""

from __future__ import annotations

from sidecar.labelstudio.store import BridgeStore
from sidecar.review.outbox import Outbox


class ResolutionOutbox(Outbox[BridgeStore]):
    service = "labelstudio"
    source = "labelstudio"
