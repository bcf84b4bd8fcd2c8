"""The spool recorder: Route's durable() returns only once an fsync covers its
escalation; concurrent callers share fsyncs; a failed fsync refuses exactly the
escalations it should have covered, and the next call tries again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.errors import EscalationRefused
from sidecar.escalation.recorder import SpoolRecorder
from sidecar.escalation.spool import Spool, read_unacked
from tests.escalations import escalation


class CountingSpool(Spool):
    """A real spool that counts its fsyncs and can be told to fail the next ones
    (a disk error this machine cannot produce on demand)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.syncs = 0
        self.fail_next = 0

    def sync(self) -> int:
        self.syncs += 1
        if self.fail_next:
            self.fail_next -= 1
            raise EscalationRefused("spool fsync failed: Input/output error")
        return super().sync()


@pytest.fixture
def spool(tmp_path: Path) -> CountingSpool:
    return CountingSpool(tmp_path)


@pytest.fixture
def recorder(spool: CountingSpool) -> Iterator[SpoolRecorder]:
    """A recorder on spool, closed after the test."""
    recorder = SpoolRecorder(spool)
    yield recorder
    recorder.close()


def test_concurrent_escalations_share_fsyncs_and_all_are_durable(tmp_path: Path) -> None:
    spool = CountingSpool(tmp_path)
    recorder = SpoolRecorder(spool)  # closed here, before what it spooled is read

    async def route(i: int) -> int:
        ticket = recorder.record(escalation(f"e{i}"))
        await recorder.durable(ticket)
        assert spool.synced_offset >= ticket  # answered only once covered
        return ticket

    async def scenario() -> list[int]:
        return await asyncio.gather(*(route(i) for i in range(200)))

    tickets = asyncio.run(scenario())
    assert spool.syncs < len(tickets)  # group commit
    assert spool.synced_offset == max(tickets)
    recorder.close()
    assert len(list(read_unacked(tmp_path))) == 200


def test_a_failed_fsync_refuses_its_waiters_and_the_next_call_retries(
    spool: CountingSpool, recorder: SpoolRecorder
) -> None:
    async def scenario() -> None:
        first = recorder.record(escalation("e1"))
        await recorder.durable(first)
        spool.fail_next = 1
        second = recorder.record(escalation("e2"))
        with pytest.raises(EscalationRefused, match="fsync failed"):
            await recorder.durable(second)
        await recorder.durable(first)  # already covered: no fsync needed
        assert spool.syncs == 2
        await recorder.durable(second)  # the disk recovered: a new fsync covers it
        assert spool.synced_offset >= second

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_cancel_the_fsync_others_wait_for(
    spool: CountingSpool, recorder: SpoolRecorder
) -> None:
    async def scenario() -> None:
        tickets = [recorder.record(escalation(f"e{i}")) for i in range(3)]
        waits = [asyncio.create_task(recorder.durable(t)) for t in tickets]
        await asyncio.sleep(0)  # all three are waiting
        waits[0].cancel()
        await asyncio.gather(*waits[1:])
        assert waits[0].cancelled()
        assert spool.synced_offset >= max(tickets)
        assert recorder.written.is_set()  # the forwarder learns of all three

    asyncio.run(scenario())


def test_the_forwarder_is_woken_once_records_are_durable_not_before(
    recorder: SpoolRecorder,
) -> None:
    async def scenario() -> None:
        ticket = recorder.record(escalation("e1"))
        assert not recorder.written.is_set()  # in the kernel's hands, not yet on disk
        await recorder.durable(ticket)
        assert recorder.written.is_set()

    asyncio.run(scenario())


def test_with_fsync_off_durable_returns_at_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    recorder = SpoolRecorder(spool)

    async def scenario() -> None:
        await recorder.durable(recorder.record(escalation("e1")))

    asyncio.run(scenario())
    assert recorder.written.is_set()
    recorder.close()
