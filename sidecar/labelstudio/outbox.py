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
from sidecar.review.outbox import BATCH, Outbox, retraction_event, review_event

SOURCE = "labelstudio"


class ResolutionOutbox(Outbox[BridgeStore]):
    service = "labelstudio"

    def send(self) -> int:
        """Send the unsent retractions, then the unsent resolutions, until none is left
        or the service cannot be reached; how many events were sent."""
        sent = 0
        while corrected := self._store.unretracted(BATCH):
            events = [retraction_event(e, c, source=SOURCE) for e, c in corrected]
            if not self._sender.record(events):
                return sent
            self._store.mark_retracted(
                [(c.escalation_id, c.number) for _, c in corrected], self._clock.now()
            )
            sent += len(events)
        while resolved := self._store.unforwarded(BATCH, self._clock.now()):
            events = [review_event(item, number, source=SOURCE) for item, number in resolved]
            if not self._sender.record(events):
                return sent
            self._store.mark_forwarded(resolved, self._clock.now())
            sent += len(events)
        return sent
