"""The feedback log's rules: a single event is refused with its error, a batch judges
each event on its own and keeps the rest; the sender is the credential's principal;
every outcome is counted by type and status."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.clock import FakeClock
from sidecar.errors import InvalidRequest, PermissionDenied
from sidecar.feedback.ingest import REJECTED, FeedbackLog
from sidecar.feedback.metrics import FeedbackMetrics
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.validation import MAX_BATCH
from tests.unit.feedback.conftest import APP, REVIEW, SIDECAR
from tests.unit.feedback.test_validation import decision, event
from tests.unit.review.conftest import points


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def metrics(reader: InMemoryMetricReader) -> FeedbackMetrics:
    """The feedback metrics, read through reader."""
    return FeedbackMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))


@pytest.fixture
def feedback(store: FeedbackStore, clock: FakeClock, metrics: FeedbackMetrics) -> FeedbackLog:
    return FeedbackLog(store, clock, metrics)


def test_a_recorded_event_is_kept_under_its_senders_name(feedback: FeedbackLog) -> None:
    result = feedback.record(SIDECAR, event())
    assert (result.key, result.status, result.message) == ("f-1", "ACCEPTED", "")
    (kept,) = feedback.history("r-1").events
    assert (kept.sender, kept.received_at, kept.type) == ("sidecar-1", 1000.0, "OUTCOME")


def test_a_single_refused_event_raises_and_stores_nothing(feedback: FeedbackLog) -> None:
    with pytest.raises(InvalidRequest, match="rating"):
        feedback.record(APP, event(type=fpb.FEEDBACK_RATING))
    with pytest.raises(PermissionDenied, match="may not send FEEDBACK_RATING"):
        feedback.record(SIDECAR, event(type=fpb.FEEDBACK_RATING, label=None, rating=0.5))
    assert feedback.history("r-1").events == []


def test_a_batch_rejects_in_place_and_keeps_the_rest(
    feedback: FeedbackLog, reader: InMemoryMetricReader
) -> None:
    results = feedback.record_batch(
        APP,
        [
            event(feedback_id="a"),
            event(feedback_id="b", type=fpb.FEEDBACK_REVIEW),
            event(feedback_id="c", type=fpb.FEEDBACK_RATING, label=None, rating=2.0),
            event(feedback_id="a"),
            event(feedback_id="a", label=fpb.Label(class_index=9)),
            event(feedback_id="d", type=fpb.FEEDBACK_RATING, label=None, rating=0.5),
        ],
    )
    assert [(r.key, r.status) for r in results] == [
        ("a", "ACCEPTED"),
        ("b", REJECTED),
        ("c", REJECTED),
        ("a", "DUPLICATE"),
        ("a", "CONFLICT"),
        ("d", "ACCEPTED"),
    ]
    assert "may not send FEEDBACK_REVIEW" in results[1].message
    assert results[2].message.startswith("rating:")
    assert "holds another event" in results[4].message
    assert [e.feedback_id for e in feedback.history("r-1").events] == ["a", "d"]
    counted = points(reader, "hitl.feedback.events")
    assert counted[frozenset({("type", "OUTCOME"), ("status", "ACCEPTED")})] == 1
    assert counted[frozenset({("type", "OUTCOME"), ("status", "DUPLICATE")})] == 1
    assert counted[frozenset({("type", "OUTCOME"), ("status", "CONFLICT")})] == 1
    assert counted[frozenset({("type", "REVIEW"), ("status", REJECTED)})] == 1
    assert counted[frozenset({("type", "RATING"), ("status", REJECTED)})] == 1
    assert counted[frozenset({("type", "RATING"), ("status", "ACCEPTED")})] == 1


def test_a_batch_of_none_or_too_many_is_refused(feedback: FeedbackLog) -> None:
    for events in ([], [event()] * (MAX_BATCH + 1)):
        with pytest.raises(InvalidRequest, match="events"):
            feedback.record_batch(APP, events)


def test_history_needs_a_request_id(feedback: FeedbackLog) -> None:
    with pytest.raises(InvalidRequest, match="request_id"):
        feedback.history("")


def test_decisions_are_kept_and_attribute_their_requests_events(
    store: FeedbackStore, clock: FakeClock, metrics: FeedbackMetrics, reader: InMemoryMetricReader
) -> None:
    feedback = FeedbackLog(store, clock, metrics, join_window=60)
    feedback.record(APP, event(feedback_id="early"))  # before its decision: waits
    results = feedback.record_decisions(
        SIDECAR, [decision(), decision(request_id="r-2", logits=[]), decision()]
    )
    assert [(r.key, r.status) for r in results] == [
        ("r-1", "ACCEPTED"),
        ("r-2", REJECTED),
        ("r-1", "DUPLICATE"),
    ]
    assert results[1].message.startswith("logits:")
    history = feedback.history("r-1")
    assert history.decision is not None
    assert (history.decision.sender, history.decision.inclusion_probability) == ("sidecar-1", 0.05)
    assert [e.feedback_id for e in history.events] == ["early"]
    counted = points(reader, "hitl.feedback.decisions")
    assert counted[frozenset({("status", "ACCEPTED")})] == 1
    assert counted[frozenset({("status", REJECTED)})] == 1


def test_the_sweep_dead_letters_what_waited_past_the_join_window(
    store: FeedbackStore, clock: FakeClock, metrics: FeedbackMetrics, reader: InMemoryMetricReader
) -> None:
    feedback = FeedbackLog(store, clock, metrics, join_window=60)
    feedback.record(APP, event(feedback_id="orphan", request_id="r-9"))
    clock.advance(59)
    assert feedback.sweep() == 0
    clock.advance(2)
    assert feedback.sweep() == 1
    (letter,) = store.dead_letters(10)
    assert "join window (60 s)" in letter.reason
    assert points(reader, "hitl.feedback.dead_lettered")[frozenset()] == 1


def test_a_label_outside_its_decisions_classes_is_refused(feedback: FeedbackLog) -> None:
    """Known decision with 3 classes: class 3 is refused naming label.class_index; a
    label about a request not decided yet waits (it cannot be checked)."""
    feedback.record_decisions(SIDECAR, [decision(logits=[0.1, 2.0, -1.0])])
    with pytest.raises(InvalidRequest, match=r"label\.class_index: 3 is not one of the 3"):
        feedback.record(SIDECAR, event(label=fpb.Label(class_index=3)))
    results = feedback.record_batch(
        APP,
        [
            event(feedback_id="ok", label=fpb.Label(class_index=2)),
            event(feedback_id="bad", label=fpb.Label(class_index=5)),
            event(feedback_id="later", request_id="r-9", label=fpb.Label(class_index=5)),
        ],
    )
    assert [(r.key, r.status) for r in results] == [
        ("ok", "ACCEPTED"),
        ("bad", REJECTED),
        ("later", "ACCEPTED"),
    ]


def test_a_label_by_name_is_checked_against_its_decisions_labels(
    feedback: FeedbackLog, store: FeedbackStore
) -> None:
    """A decision that carries its model's labels: a name among them is kept with its
    class; a name outside them, or one that is not its class index's, is refused
    naming label.name. Without labels a name cannot be told and is kept."""
    feedback.record_decisions(
        SIDECAR,
        [decision(labels=["zero", "one", "two"]), decision(request_id="r-2", predicted_label="")],
    )
    assert feedback.record(APP, event(feedback_id="n", label=fpb.Label(name="two"))).status == (
        "ACCEPTED"
    )
    for bad in (fpb.Label(name="three"), fpb.Label(name="two", class_index=1)):
        with pytest.raises(InvalidRequest, match=r"^label\.name: "):
            feedback.record(APP, event(feedback_id="bad", label=bad))
    kept = feedback.record(APP, event(feedback_id="u", request_id="r-2", label=fpb.Label(name="x")))
    assert kept.status == "ACCEPTED"
    classes = {e.feedback_id: e.label_class for e in store.history("r-1") + store.history("r-2")}
    assert classes == {"n": 2, "u": -1}


def test_the_loops_health_per_model_and_tier(
    store: FeedbackStore, clock: FakeClock, metrics: FeedbackMetrics, reader: InMemoryMetricReader
) -> None:
    """Over the window: coverage (share labelled), override rate (share of the labelled
    whose label is another class) and the label delay's quantiles, in the metrics."""
    feedback = FeedbackLog(store, clock, metrics, monitor_window=500)
    human = dpb.TIER_HUMAN_ASSISTED
    feedback.record_decisions(
        SIDECAR,
        [
            decision(request_id="a1", decided_at=900.0),  # automated, predicts 1
            decision(request_id="a2", decided_at=900.0),
            decision(request_id="a3", decided_at=900.0),
            decision(request_id="a4", decided_at=900.0),
            decision(request_id="h1", decided_at=950.0, tier=human, inclusion_probability=1),
            decision(request_id="old", decided_at=100.0),  # before the window
        ],
    )
    clock.advance(10)  # labels arrive 110 s after the automated decisions
    for request_id, cls in (("a1", 1), ("a2", 2), ("h1", 0), ("old", 0)):
        labelled = event(feedback_id=f"o-{request_id}", request_id=request_id)
        labelled.label.class_index = cls
        feedback.record(SIDECAR, labelled)
    reading = feedback.monitor()
    assert reading["coverage"] == {("digits", "AUTOMATED"): 0.5, ("digits", "HUMAN_ASSISTED"): 1.0}
    assert reading["override_rate"] == {
        ("digits", "AUTOMATED"): 0.5,
        ("digits", "HUMAN_ASSISTED"): 1.0,
    }
    assert reading["label_delay"][("digits", "AUTOMATED", "p50")] == pytest.approx(110.0)
    assert reading["label_delay"][("digits", "HUMAN_ASSISTED", "p90")] == pytest.approx(60.0)
    gauges = points(reader, "hitl.feedback.coverage")
    assert gauges[frozenset({("model", "digits"), ("tier", "AUTOMATED")})] == 0.5


def test_the_loops_latency_stage_by_stage(
    feedback: FeedbackLog, clock: FakeClock, reader: InMemoryMetricReader
) -> None:
    """A review's stages in the queue count when it arrives; a label's join, and the
    whole loop from its decision, when both it and its decision are in: at the
    decision's arrival for a label that waited, at once for one that came after."""
    times = {"escalated_at": "899.5", "received_at": "901", "claimed_at": "960"}
    reviewed = event(
        feedback_id="rv",
        type=fpb.FEEDBACK_REVIEW,
        label=fpb.Label(class_index=1),
        occurred_at=990.0,
        user_context=times,
    )
    feedback.record(REVIEW, reviewed)  # before its decision
    assert stages(reader) == {
        ("delivered", "REVIEW"): (1, 1.5),
        ("claimed", "REVIEW"): (1, 59.0),
        ("resolved", "REVIEW"): (1, 30.0),
    }
    clock.advance(5)
    feedback.record_decisions(SIDECAR, [decision(decided_at=899.5)] * 2)  # once
    clock.advance(5)
    outcome = event(feedback_id="o", label=fpb.Label(class_index=2))
    feedback.record(SIDECAR, outcome)  # after it; it happened when received
    feedback.record(SIDECAR, outcome)  # a duplicate counts nothing
    assert stages(reader) == {
        ("delivered", "REVIEW"): (1, 1.5),
        ("claimed", "REVIEW"): (1, 59.0),
        ("resolved", "REVIEW"): (1, 30.0),
        ("joined", "REVIEW"): (1, 15.0),
        ("end_to_end", "REVIEW"): (1, 105.5),
        ("joined", "OUTCOME"): (1, 0.0),
        ("end_to_end", "OUTCOME"): (1, 110.5),
    }


def stages(reader: InMemoryMetricReader) -> dict[tuple[str, str], tuple[int, float]]:
    """The loop-latency histogram's (count, sum) by (stage, type)."""
    found = points(reader, "hitl.feedback.loop_latency")
    return {
        (dict(key)["stage"], dict(key)["type"]): (point.count, point.sum)
        for key, point in found.items()
    }


def test_a_calls_span_links_to_the_route_spans_of_the_decisions_it_is_about(
    feedback: FeedbackLog,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    route_trace, route_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with tracer.start_as_current_span("RecordDecisions"):
        feedback.record_decisions(
            SIDECAR,
            [
                decision(trace_id=route_trace, span_id=route_span),
                decision(request_id="r-2", trace_id="not-hex", span_id="x"),  # skipped
            ],
        )
    with tracer.start_as_current_span("RecordBatch"):
        feedback.record_batch(
            APP, [event(label=fpb.Label(class_index=0)), event(feedback_id="f-2", request_id="r-9")]
        )
    rating = event(feedback_id="f-3", type=fpb.FEEDBACK_RATING, label=None, rating=0.5)
    with tracer.start_as_current_span("Record"):  # no label: looked up for the link alone
        feedback.record(APP, rating)
    decisions, batch, rated = exporter.get_finished_spans()
    for span in (decisions, batch, rated):
        assert [
            (format_trace_id(link.context.trace_id), format_span_id(link.context.span_id))
            for link in span.links
        ] == [(route_trace, route_span)]
