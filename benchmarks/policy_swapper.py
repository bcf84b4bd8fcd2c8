"""Policy changes at a steady pace while a benchmark phase runs, and what a sidecar
made of them (``route_bench --policy-swaps``).

Changes alternate, one every interval, on a thread of the benchmark process:

- tightening: t_high raised by an operator, applied by the registry at once;
- widening: the other of two calibrators with the thresholds back down, proposed
  by the operator and approved by an approver; so every other change makes the
  sidecar download an artefact, check its sha256 and build and warm a session
  while it serves.

Each change's time is taken just before the call that creates the revision
(ProposeChange for a tightening, Approve for a widening). The sidecar's log says
when it applied each revision (``policy.loaded``) and whether it refused any
(``policy.rejected``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from benchmarks.registry_admin import Changes, Document, tightened, with_calibrator
from hitl_client.stubs.hitl.v1 import registry_pb2 as rpb


@dataclass(frozen=True)
class Change:
    phase: str
    kind: str  # "tighten" or "widen"
    at: float  # time.time() just before the call that made the revision
    revision: int


@dataclass(frozen=True)
class SidecarLog:
    loaded: dict[int, float]  # revision -> time.time() of its policy.loaded from the registry
    rejected: int


class Swapper:
    def __init__(
        self, changes: Changes, base: Document, calibrators: list[dict[str, str]], interval: float
    ) -> None:
        self._changes = changes
        self._base = base
        self._calibrators = calibrators
        self.interval = interval
        self._current = 0  # index of the calibrator in force
        self._tight = False
        self.made: list[Change] = []
        self.errors: list[str] = []

    @contextmanager
    def during(self, phase: str) -> Iterator[None]:
        """Change the policy every interval until the block ends."""
        stop = threading.Event()
        thread = threading.Thread(target=self._run, args=(phase, stop), name="policy-swapper")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def close(self) -> None:
        self._changes.close()

    def _run(self, phase: str, stop: threading.Event) -> None:
        due = time.monotonic() + self.interval
        while not stop.wait(max(0.0, due - time.monotonic())):
            try:
                self.made.append(self._change(phase))
            except Exception as exc:  # reported with the results; the load goes on
                self.errors.append(repr(exc))
            due += self.interval

    def _change(self, phase: str) -> Change:
        if not self._tight:
            doc = tightened(with_calibrator(self._base, self._calibrators[self._current]))
            at = time.time()
            proposal = self._changes.propose(doc, "benchmark: tighten")
            if proposal.state != rpb.APPLIED:
                raise RuntimeError(f"a tightening change was not applied at once: {proposal}")
            self._tight = True
            return Change(phase, "tighten", at, proposal.revision)
        following = (self._current + 1) % len(self._calibrators)
        doc = with_calibrator(self._base, self._calibrators[following])
        proposal = self._changes.propose(doc, "benchmark: widen with the other calibrator")
        at = time.time()
        revision = self._changes.approve(proposal)
        self._current, self._tight = following, False
        return Change(phase, "widen", at, revision)


def read_sidecar_log(path: Path) -> SidecarLog:
    """Revisions the sidecar applied from the registry, and how many it refused."""
    loaded: dict[int, float] = {}
    rejected = 0
    for line in path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue
        event = orjson.loads(line)
        if event.get("event") == "policy.loaded" and event.get("source") == "registry":
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            loaded.setdefault(int(event["revision"]), stamp)
        elif event.get("event") == "policy.rejected":
            rejected += 1
    return SidecarLog(loaded, rejected)
