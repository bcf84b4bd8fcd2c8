"""Feedback store fixtures: every store test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.auth import Principal
from sidecar.feedback.store import FeedbackStore
from sidecar.feedback.stores.sql import SqlStore
from tests.postgres import opened_stores

OpenStore = Callable[[], FeedbackStore]

APP = Principal("app", frozenset({"client"}))
SIDECAR = Principal("sidecar-1", frozenset({"sidecar"}))
REVIEW = Principal("queue", frozenset({"review"}))


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens stores on one fresh database (more than one: replicas sharing it)."""
    with opened_stores(request.param, tmp_path / "feedback.db", SqlStore) as open_one:
        yield open_one


@pytest.fixture
def store(open_store: OpenStore) -> FeedbackStore:
    return open_store()
