"""Review queue fixtures: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.clock import FakeClock
from sidecar.review.metrics import ReviewMetrics
from sidecar.review.queue import ReviewQueue
from sidecar.review.sla import Sla
from sidecar.review.store import ReviewStore
from sidecar.review.stores.sql import SqlStore
from tests.postgres import opened_stores

OpenStore = Callable[[], ReviewStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens stores on one fresh database (more than one: replicas sharing it)."""
    with opened_stores(request.param, tmp_path / "review.db", SqlStore) as open_one:
        yield open_one


@pytest.fixture
def store(open_store: OpenStore) -> ReviewStore:
    return open_store()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def metrics(reader: InMemoryMetricReader) -> ReviewMetrics:
    """The review metrics, read through reader."""
    return ReviewMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))


@pytest.fixture
def queue(store: ReviewStore, clock: FakeClock, metrics: ReviewMetrics) -> ReviewQueue:
    """A queue with the default SLA (15 min, 2 h, 24 h) on a fake clock."""
    return ReviewQueue(store, clock, Sla(), metrics)


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
    """The latest value of each of a metric's points, keyed by their attributes."""
    data = reader.get_metrics_data()
    found: dict[frozenset[tuple[str, Any]], Any] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        found[frozenset((point.attributes or {}).items())] = (
                            point if value is None else value
                        )
    return found
