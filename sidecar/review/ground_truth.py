"""Ground truth for reviewer quality: the labels the feedback service holds for the
requests reviewers labelled, kept in a bounded cache beside the queue.

The service answers its ``Labels`` call for the queue's ``review`` principal (the one
the outbox sends with): per request, the class of the outcome or, failing one, the
user's correction that stands, by the rule its datasets use (the latest within a
source, a retracted label not counted). The queue's own REVIEW events are never
among them: reviewers are compared with what happened, not with themselves.

Who reads what:

- the ``review-quality`` task (``quality_window.refresh_gauges``) calls ``refresh``
  with the request ids of its window, plus those a console page asked for and did
  not find; only ids not cached, or cached longer than ``max_age`` seconds, are sent,
  ``BATCH`` to a call, each call with a short deadline. With none of those, the
  batch read longest ago is read again: every refresh asks the service something,
  so a service that stopped answering is noticed within one sweep;
- a console page or API call reads ``known``: what the cache holds, never a call to
  the service, so a page never waits on it. Ids it lacks are queued for the next
  refresh, and the page says how many.

The service unreachable or refusing: ``refresh`` records why and raises
``TruthUnavailable`` (the task's supervisor logs and counts it), and ``known`` says
ground truth is unavailable, with that reason, until a refresh succeeds again. The
cache holds at most ``max_entries`` requests, dropping those read longest ago."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc
from sidecar.clock import Clock
from sidecar.errors import HitlError
from sidecar.serving import bearer, client_channel
from sidecar.settings import ClientCredentials

BATCH = 1000  # request ids to a Labels call (the service's maximum)
TIMEOUT_SECONDS = 5.0  # each Labels call's deadline
MAX_AGE_SECONDS = 300.0  # a cached answer is asked again after this long
MAX_ENTRIES = 200_000  # requests the cache holds
SOURCES = ("outcome", "correction")  # what counts as ground truth, the first winning


class TruthUnavailable(HitlError):
    """The feedback service could not be read (unreachable, refusing, too slow)."""


class LabelSource(Protocol):
    def labels(self, request_ids: Sequence[str]) -> Mapping[str, int]:
        """The true class of each of request_ids that has one; TruthUnavailable when
        it cannot say."""
        ...


class FeedbackLabels:
    """The feedback service's Labels call, with the queue's credentials."""

    def __init__(
        self, target: str, credentials: ClientCredentials, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self._target = target
        self._channel = client_channel(target, credentials.ca, credentials.cert, credentials.key)
        self._stub = fpb_grpc.FeedbackStub(self._channel)
        self._metadata = bearer(credentials.token)
        self._timeout = timeout

    def labels(self, request_ids: Sequence[str]) -> dict[str, int]:
        request = fpb.LabelsRequest(request_ids=request_ids, label_sources=SOURCES)
        try:
            response = self._stub.Labels(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise TruthUnavailable(
                f"the feedback service at {self._target}: {code}: {detail}"
            ) from exc
        return {label.request_id: label.class_index for label in response.labels}

    def close(self) -> None:
        self._channel.close()


@dataclass(frozen=True, slots=True)
class Known:
    """What the cache says of the requests a report covers."""

    classes: Mapping[str, int] | None  # request_id -> true class; None: unavailable
    pending: int = 0  # requests asked for that the cache does not hold yet
    read_at: float | None = None  # when the service was last read successfully
    reason: str = ""  # why ground truth is unavailable

    def as_json(self) -> dict[str, Any]:
        return {
            "available": self.classes is not None,
            "sources": list(SOURCES),
            "read_at": self.read_at,
            "pending": self.pending,
            "reason": self.reason,
        }


class GroundTruth:
    """The cache of the service's answers (None: it has no label for the request)."""

    def __init__(
        self,
        source: LabelSource,
        clock: Clock,
        *,
        max_age: float = MAX_AGE_SECONDS,
        max_entries: int = MAX_ENTRIES,
        batch: int = BATCH,
    ) -> None:
        self._source = source
        self._clock = clock
        self._max_age = max_age
        self._max_entries = max_entries
        self._batch = batch
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[int | None, float]] = OrderedDict()
        self._wanted: dict[str, None] = {}  # ids pages lacked, in order, for the next refresh
        self._read_at: float | None = None
        self._failure = "the feedback service has not been read yet"
        self.reads = 0  # Labels calls made

    def refresh(self, request_ids: Iterable[str]) -> int:
        """Ask the service for the labels of request_ids and the wanted ones that are
        not cached or are older than max_age (none: the batch read longest ago); how
        many were asked. TruthUnavailable (recorded for ``known``) when a call fails:
        what earlier calls read is kept."""
        now = self._clock.now()
        with self._lock:
            wanted, self._wanted = list(self._wanted), {}
            due = [
                rid
                for rid in dict.fromkeys([*request_ids, *wanted])
                if (cached := self._cache.get(rid)) is None or now - cached[1] >= self._max_age
            ]
            if not due:
                due = list(itertools.islice(self._cache, self._batch))
        for start in range(0, len(due), self._batch):
            batch = due[start : start + self._batch]
            try:
                found = self._source.labels(batch)
            except TruthUnavailable as exc:
                with self._lock:
                    self._failure = str(exc)
                    # What pages asked for and was not read is asked for next time.
                    for rid in wanted:
                        if rid not in self._cache:
                            self._wanted.setdefault(rid, None)
                raise
            self.reads += 1
            with self._lock:
                for rid in batch:
                    self._put(rid, found.get(rid), now)
        with self._lock:
            self._read_at, self._failure = now, ""
        return len(due)

    def known(self, request_ids: Iterable[str]) -> Known:
        """The cached classes of request_ids, at once; the ones not cached are wanted
        by the next refresh. Unavailable while the last refresh failed."""
        with self._lock:
            if self._failure:
                return Known(None, read_at=self._read_at, reason=self._failure)
            classes: dict[str, int] = {}
            pending = 0
            for rid in dict.fromkeys(request_ids):
                cached = self._cache.get(rid)
                if cached is None:
                    pending += 1
                    if len(self._wanted) < self._max_entries:
                        self._wanted[rid] = None
                elif cached[0] is not None:
                    classes[rid] = cached[0]
            return Known(classes, pending, self._read_at)

    def _put(self, request_id: str, true_class: int | None, now: float) -> None:
        self._cache[request_id] = (true_class, now)
        self._cache.move_to_end(request_id)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
