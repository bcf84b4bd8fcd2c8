"""Resolutions to the feedback service, as the review queue's are: each resolved
task becomes the REVIEW event ``review.outbox.review_event`` builds for the review
queue's item (feedback_id ``review-<escalation_id>``, so a batch sent twice is
recorded once), with ``labelstudio`` as its source; sent a batch at a time, each
marked sent once the service has answered for it; a refusal for good is logged and
marked; the service unreachable, nothing is marked and the next run retries."""

from __future__ import annotations

from sidecar.labelstudio.store import BridgeStore
from sidecar.review.outbox import BATCH, Outbox, review_event

SOURCE = "labelstudio"


class ResolutionOutbox(Outbox[BridgeStore]):
    service = "labelstudio"

    def send(self) -> int:
        """Send the unsent resolutions until none is left or the service cannot be
        reached; how many were sent."""
        sent = 0
        while items := self._store.unforwarded(BATCH, self._clock.now()):
            if not self._sender.record([review_event(item, source=SOURCE) for item in items]):
                return sent
            self._store.mark_forwarded(items, self._clock.now())
            sent += len(items)
        return sent
