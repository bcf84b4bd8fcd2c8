"""The batch decision over columns against the one-request decision: the same
answer, field by field, for every row of random batches under random policies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.batch import BatchRows, decide_rows
from sidecar.core.decision import CalibrationFailure, Decision, decide
from sidecar.core.policy import Policy
from sidecar.core.request import RouteInput
from sidecar.core.signals import SignalRow, Signals
from tests.strategies import MODEL, policies, requests, signals

NOW = 1_000.0  # a policy the strategy makes stale was issued at 0 with a 60 s maximum age


def rows_of(batch: list[RouteInput]) -> BatchRows:
    return BatchRows(
        [r.request_id for r in batch],
        [r.domain for r in batch],
        [r.model_version for r in batch],
        [r.string_attributes for r in batch],
        [r.numeric_attributes for r in batch],
    )


def as_row(s: Signals | None) -> SignalRow | None:
    return None if s is None else (s.predicted_class, s.confidence, s.margin, s.entropy)


@given(
    st.lists(st.tuples(requests(), st.one_of(st.none(), signals())), min_size=1, max_size=12),
    policies(),
    st.booleans(),
)
def test_each_row_decides_as_it_would_alone(
    batch: list[tuple[RouteInput, Signals | None]], policy: Policy, drifted: bool
) -> None:
    """Rules, arms, domains, tiers, pauses, the audit sample and the fallbacks: row
    for row."""
    inputs = [request for request, _ in batch]
    columns = decide_rows(
        policy.models[MODEL],
        policy.revision,
        policy.is_stale(NOW),
        rows_of(inputs),
        [as_row(s) for _, s in batch],
        drifted,
    )
    alone = [
        decide(
            request, policy, CalibrationFailure.NON_FINITE if s is None else s, NOW, drifted
        ).row()
        for request, s in batch
    ]
    assert columns.rows() == alone


@given(
    st.lists(requests(), min_size=1, max_size=5), policies(), st.sampled_from(CalibrationFailure)
)
def test_a_failed_calibrator_fails_every_row_over(
    batch: list[RouteInput], policy: Policy, failure: CalibrationFailure
) -> None:
    """A calibrator that raised gives each row the fallback decide() gives it alone."""
    columns = decide_rows(
        policy.models[MODEL], policy.revision, policy.is_stale(NOW), rows_of(batch), failure
    )
    alone = [decide(request, policy, failure, NOW) for request in batch]
    assert [Decision.from_row(row) for row in columns.rows()] == alone
