"""Background tasks under the supervisor: an unexpected error is logged, counted,
reported and the task run again; a task that returns is done; cancelling stops it.
A blocking service's Periodic task the same: logged, counted in the same metric,
run again on time.
And the forwarder itself: a full disk on the spool's ack no longer ends delivery."""

from __future__ import annotations

import asyncio
import errno
import random
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from structlog.testing import capture_logs

from sidecar.supervision import Periodic, Supervisor, TaskState
from sidecar.telemetry.metrics import observe_tasks
from tests.integration.conftest import wait_for
from tests.unit.escalation.test_forwarder import ScriptedSink, ids, rig, spool_ids
from tests.unit.review.conftest import points


def test_a_failing_task_is_logged_counted_and_run_again() -> None:
    """Two failures, then it finishes: each failure is logged with the task's name and
    counted, the task reports not running while it waits, and runs again."""
    runs: list[int] = []
    changes: list[tuple[str, bool, int]] = []

    async def work() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    def seen(state: TaskState) -> None:
        changes.append((state.name, state.running, state.failures))

    supervisor = Supervisor(seen, 0.001, 0.002, random.Random(1))
    with capture_logs() as logs:
        asyncio.run(supervisor.run("forwarder", work))
    assert runs == [0, 1, 2]
    assert supervisor.tasks["forwarder"].failures == 2
    assert supervisor.tasks["forwarder"].running
    assert changes == [
        ("forwarder", False, 1),
        ("forwarder", True, 1),
        ("forwarder", False, 2),
        ("forwarder", True, 2),
    ]
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert [e["task"] for e in failed] == ["forwarder", "forwarder"]
    assert "No space left on device" in failed[0]["error"]


def test_cancelling_a_supervised_task_stops_it() -> None:
    async def main() -> None:
        supervisor = Supervisor()
        task = asyncio.ensure_future(supervisor.run("sleeper", lambda: asyncio.sleep(60)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert supervisor.tasks["sleeper"].failures == 0

    asyncio.run(main())


def test_a_full_disk_on_ack_does_not_end_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's ack fails with ENOSPC once: the supervised forwarder logs it,
    restarts, and every escalation is delivered; stop then returns cleanly."""
    sink = ScriptedSink()
    spool, _, forwarder = rig(tmp_path, sink)
    spool_ids(spool, ids(25))
    real_ack = spool.ack
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def ack(end: int, count: int) -> None:
        if failures:
            raise failures.pop()
        real_ack(end, count)

    monkeypatch.setattr(spool, "ack", ack)

    async def main() -> None:
        supervisor = Supervisor(None, 0.001, 0.002, random.Random(1))
        task = asyncio.ensure_future(supervisor.run("forwarder", forwarder.run))
        for _ in range(500):
            if spool.stats().records == 0:
                break
            await asyncio.sleep(0.01)
        await forwarder.stop(task, 1.0)
        assert supervisor.tasks["forwarder"].failures == 1

    with capture_logs() as logs:
        asyncio.run(main())
    assert spool.stats().records == 0
    assert spool.stats().pending_bytes == 0
    assert sorted(set(sink.received)) == ids(25)
    assert any(e["event"] == "task.failed" for e in logs)


def test_a_periodic_task_that_fails_is_logged_counted_exported_and_run_again() -> None:
    runs: list[int] = []

    def work() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise OSError("disk full")

    task = Periodic("service-sweep", 0.01, work)
    reader = InMemoryMetricReader()
    observe_tasks(MeterProvider(metric_readers=[reader]).get_meter("t"), lambda: [task.state])
    with capture_logs() as logs:
        task.start()
        wait_for(lambda: len(runs) >= 4, 5.0, "runs after the failures")
        task.stop()
    assert task.state.failures == 2
    assert [e["task"] for e in logs if e["event"] == "task.failed"] == ["service-sweep"] * 2
    key = frozenset({("task", "service-sweep")})
    assert points(reader, "hitl.task.failures")[key] == 2
    assert points(reader, "hitl.task.running")[key] == 1
