"""Where the feedback service keeps its events: one interface, implemented once in SQL
(``stores.sql``) on a SQLite file, the embedded default, or PostgreSQL for replicas
sharing one database, with numbered schema migrations applied at open.

Every method is one transaction and takes its times from the caller: stores read no
clock. A store raises StoreUnavailable when the database fails or cannot be reached
(the caller may retry: adding is idempotent by ``feedback_id``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sidecar.auth import Principal
from sidecar.feedback.dataset import Labelled
from sidecar.feedback.records import DeadLetter, Decided, Health, Known, Outcome, Received
from sidecar.feedback.stores.sql import SqlStore
from sidecar.storage.store import open_database


class FeedbackStore(Protocol):
    def add(self, events: Sequence[Received]) -> list[Outcome]:
        """Append each event whose feedback_id is new (ACCEPTED); an id already stored
        is DUPLICATE when its event is the same, CONFLICT when not (nothing written)."""
        ...

    def history(self, request_id: str) -> list[Received]:
        """Every event about request_id, in the order received."""
        ...

    def add_decisions(self, decisions: Sequence[Decided]) -> list[Outcome]:
        """Keep each decision whose request_id is new (ACCEPTED); one already stored is
        DUPLICATE when the same, CONFLICT when not (nothing written)."""
        ...

    def decision(self, request_id: str) -> Decided | None: ...

    def known(self, request_ids: Sequence[str]) -> dict[str, Known]:
        """What is known of the decision for each of request_ids that has one."""
        ...

    def labels_about(self, request_ids: Sequence[str]) -> list[Received]:
        """The label events (outcomes, reviews, corrections) about request_ids that no
        retraction has withdrawn."""
        ...

    def events(self, feedback_ids: Sequence[str]) -> dict[str, Received]:
        """The stored events of feedback_ids, by feedback_id (an id not stored: absent)."""
        ...

    def dead_letter_unattributed(self, before: float, reason: str, now: float) -> int:
        """Dead-letter every event received before ``before`` whose request has no
        decision and that is not dead-lettered already; how many."""
        ...

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The dead-lettered events, oldest first."""
        ...

    def labels_of(self, request_ids: Sequence[str]) -> list[Labelled]:
        """The decisions of request_ids that are recorded, each with the label events
        about it no retraction has withdrawn, in order, and when each was received;
        one query for all of them."""
        ...

    def labelled(self, model: str, since: float, until: float) -> list[Labelled]:
        """model's decisions decided in [since, until) with the label events (outcomes,
        reviews, corrections) received before until and not withdrawn by a retraction
        received before until; both as sent, events in order."""
        ...

    def recorded(self, model: str, since: float, until: float) -> list[Labelled]:
        """As ``labelled``, with the decisions that have no label event yet (their
        events empty): every decision the log recorded, for estimates that weigh the
        labelled ones against all of them."""
        ...

    def health(self, since: float) -> list[Health]:
        """Per model and tier, the decisions decided since: labelled and overridden (by
        the labels that stand: a retracted one counts for nothing)."""
        ...

    def label_delays(self, since: float) -> list[tuple[str, str, float]]:
        """(model, tier, seconds from decision to its first label) of every labelled
        decision decided since."""
        ...

    def models(self) -> list[str]:
        """The models the log holds decisions of."""
        ...

    def new_labels(self, model: str, since: float) -> tuple[int, float | None]:
        """(decisions of model with a label event received since, the oldest such
        event's receipt time)."""
        ...

    def last_trigger(self, model: str) -> float:
        """Up to when model's last model-update trigger covered (0: never)."""
        ...

    def record_trigger(
        self, model: str, until: float, dataset: str, rows: int, at: float
    ) -> None: ...

    def counts(self) -> dict[str, int]:
        """How many decisions (``DECISIONS``) and events of each type the log holds."""
        ...

    def replay_dead_letters(self) -> tuple[int, int]:
        """Release the dead letters whose decision has arrived since: (released, left)."""
        ...

    def add_principal(
        self, name: str, roles: frozenset[str], token_sha256: str, cert_subject: str, now: float
    ) -> None: ...

    def principal_for_token(self, token_sha256: str) -> Principal | None: ...

    def principal_for_subject(self, cert_subject: str) -> Principal | None: ...

    def principals(self) -> list[Principal]: ...

    def close(self) -> None: ...


def open_store(url: str) -> FeedbackStore:
    """The store on ``postgresql://...`` (a libpq URI) or ``sqlite:PATH`` (or a bare
    path); ``sidecar.storage.store.open_database`` says how each is opened."""
    return SqlStore(open_database(url))
