"""The bridge's work against Label Studio (label-studio-sdk, its blocking client):
track the tasks the sink made, turn their annotations into resolutions, keep their
deadlines.

``on_webhook`` takes a webhook's task and annotation ids and reads both back from
Label Studio's API before acting (the payload only says where to look), so a
webhook and the poll take the same path; ``poll`` (supervised, every
HITL_LABELSTUDIO_POLL_SECONDS) registers tasks made since the last poll and reads
the annotations of unresolved tasks, the longest unchecked first, finding those a
webhook never delivered; ``sweep`` raises overdue tasks and writes each task's
deadline, level and priority into its data (``due_at``, ``escalation_level``,
``priority``; a raised task's priority is 0 so it sorts first).

A task is the bridge's when it is in one of its projects (HITL_LABELSTUDIO_PROJECTS,
or the projects titled with HITL_LABELSTUDIO_PROJECT_PREFIX) and its data holds an
escalation (``hitl_escalation``); a second task holding a tracked escalation id is
deleted from Label Studio and counted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from sidecar.clock import Clock
from sidecar.core.labelstudio import RECORD_KEY
from sidecar.escalation.record import REQUIRED, Escalation
from sidecar.labelstudio.annotations import Annotation, Refusal, Refused, judge
from sidecar.labelstudio.config import LabelStudioConfig
from sidecar.labelstudio.metrics import BridgeMetrics
from sidecar.labelstudio.store import BridgeStore, Recorded, Registered, Task
from sidecar.settings import read_token

log = structlog.get_logger("hitl.labelstudio")

SYNC_BATCH = 200  # task updates one sweep writes to Label Studio
RESCAN_TASKS = 50  # task ids below the newest seen that each poll reads again
# What an annotation read may do to its task's resolution (the others leave it).
_CHANGED = frozenset({Recorded.RESOLVED, Recorded.UPDATED, Recorded.CORRECTED})


class Bridge:
    def __init__(
        self,
        config: LabelStudioConfig,
        store: BridgeStore,
        clock: Clock,
        metrics: BridgeMetrics | None = None,
        client: LabelStudio | None = None,
    ) -> None:
        assert config.token_file is not None  # LabelStudioConfig.load requires it
        self.config = config
        self.store = store
        self._clock = clock
        self._metrics = metrics
        self._http = httpx.Client(timeout=config.timeout_seconds)
        # The SDK's client takes its arguments untyped (*args, **kwargs).
        self.client = client or LabelStudio(  # type: ignore[no-untyped-call]
            base_url=config.url,
            api_key=read_token(config.token_file, "HITL_LABELSTUDIO_TOKEN_FILE"),
            httpx_client=self._http,
            max_retries=0,  # the supervised poll retries
        )
        self._users: dict[int, str] = {}
        self._projects: set[int] = {project for _, project in config.projects}
        self._reviewers = dict(config.reviewers)
        self._lock = threading.Lock()  # the users' and projects' caches

    def close(self) -> None:
        self._http.close()

    # The return path.

    def on_webhook(self, task_id: int, annotation_id: int) -> str:
        """Read annotation_id of task_id back from Label Studio and act on it; its result."""
        task = self.store.task(task_id) or self._register_by_id(task_id)
        if task is None:
            return self._refuse(
                annotation_id, Refused(Refusal.UNKNOWN_TASK, f"task {task_id} is not tracked")
            )
        try:
            annotation = self.client.annotations.get(annotation_id)
        except ApiError as exc:
            if exc.status_code == 404:
                return "gone"  # deleted since
            raise
        if annotation.task is not None and int(annotation.task) != task_id:
            return self._refuse(
                annotation_id,
                Refused(
                    Refusal.UNKNOWN_TASK, f"annotation {annotation_id} is not of task {task_id}"
                ),
            )
        return self._handle(task, annotation)

    def poll(self) -> int:
        """Register new tasks, then read the annotations of unresolved ones; how many
        annotations resolved, updated or corrected a task."""
        self.discover()
        changed = 0
        for task in self.store.unchecked(self.config.poll_batch, self._clock.now()):
            try:
                annotations = self.client.annotations.list(task.task_id, ordering="id")
            except ApiError as exc:
                self._gone(task, exc)
                continue
            for annotation in annotations:
                result = self._handle(task, annotation)
                changed += result in _CHANGED
        return changed

    def discover(self) -> None:
        """Track the tasks made in the bridge's projects since the last look."""
        for project in sorted(self._our_projects(refresh=True)):  # new models' too
            last = self.store.last_task_id(project)
            # From a little before the newest seen: ids are numbered at insert but
            # visible at commit, so two imports at once can show a lower id later.
            since = max(0, last - RESCAN_TASKS)
            query = {"filters": {"conjunction": "and", "items": [_after(since)]}}
            newest = last
            pager: Iterable[Any] = self.client.tasks.list(
                project=project, query=json.dumps(query), fields="task_only", page_size=100
            )
            for found in pager:
                if found.id is None:
                    continue
                self._register(int(found.id), project, found.data or {}, found.created_at)
                newest = max(newest, int(found.id))
            if newest > last:
                self.store.set_last_task_id(project, newest)

    # The SLA.

    def sweep(self) -> int:
        """Raise overdue tasks a level, write levels and deadlines Label Studio does not
        show yet, refresh the item gauge; how many were raised."""
        raised = self.store.raise_overdue(self.config.sla, self._clock.now())
        for task in raised:
            e = task.escalation
            if self._metrics is not None:
                self._metrics.overdue.add(1, {"tier": e.tier})
            log.warning(
                "labelstudio.overdue",
                escalation_id=e.escalation_id,
                task_id=task.task_id,
                model=e.model,
                tier=e.tier,
                escalation_level=task.escalation_level,
                due_at=task.due_at,
            )
        for task in self.store.unsynced(SYNC_BATCH):
            try:
                self.client.tasks.update(str(task.task_id), data=_sla_data(task))
            except ApiError as exc:
                self._gone(task, exc)
                continue
            self.store.mark_synced(task.task_id, task.escalation_level)
        if self._metrics is not None:
            self._metrics.refresh(self.store.counts())
        return len(raised)

    # Inside.

    def _handle(self, task: Task, annotation: Any) -> str:
        read = Annotation(
            annotation_id=int(annotation.id),
            task_id=task.task_id,
            user_email=self._email(annotation.completed_by),
            result=annotation.result or [],
            lead_time=float(annotation.lead_time or 0.0),
            created_at=_seconds(annotation.created_at) or self._clock.now(),
            was_cancelled=bool(annotation.was_cancelled),
        )
        verdict = judge(read, task.escalation, self._reviewers)
        if isinstance(verdict, Refused):
            return self._refuse(read.annotation_id, verdict)
        recorded, number = self.store.record(
            task.task_id, read.annotation_id, verdict, self._clock.now()
        )
        if self._metrics is not None:
            self._metrics.annotations.add(1, {"result": recorded.value})
        if recorded in _CHANGED:
            log.info(
                "labelstudio.resolved",
                escalation_id=task.escalation.escalation_id,
                task_id=task.task_id,
                annotation_id=read.annotation_id,
                reviewer=verdict.reviewer,
                verdict=verdict.verdict.value,
                updated=recorded is not Recorded.RESOLVED,
                corrected=recorded is Recorded.CORRECTED,
                number=number,
            )
        return recorded.value

    def _gone(self, task: Task, exc: ApiError) -> None:
        """Stop tracking a task deleted in Label Studio (404); other errors go up."""
        if exc.status_code != 404:
            raise exc
        if self.store.forget(task.task_id):
            log.warning(
                "labelstudio.task_gone",
                escalation_id=task.escalation.escalation_id,
                task_id=task.task_id,
            )

    def _refuse(self, annotation_id: int, refused: Refused) -> str:
        if self.store.refuse(
            annotation_id, refused.reason.value, refused.detail, self._clock.now()
        ):
            if self._metrics is not None:
                self._metrics.annotations.add(1, {"result": "refused"})
                self._metrics.refused.add(1, {"reason": refused.reason.value})
            log.warning(
                "labelstudio.refused",
                annotation_id=annotation_id,
                reason=refused.reason.value,
                detail=refused.detail,
            )
        return f"refused: {refused.reason.value}"

    def _register_by_id(self, task_id: int) -> Task | None:
        try:
            found = self.client.tasks.get(str(task_id))
        except ApiError as exc:
            if exc.status_code == 404:
                return None
            raise
        project = getattr(found, "project", None)
        if project is None:
            return None
        if int(project) not in self._our_projects(refresh=True):
            return None
        return self._register(task_id, int(project), found.data or {}, found.created_at)

    def _register(
        self, task_id: int, project: int, data: Mapping[str, Any], created: Any
    ) -> Task | None:
        escalation = _escalation(data)
        if escalation is None:
            return None
        received = _seconds(created) or self._clock.now()
        task = Task(
            escalation,
            task_id,
            project,
            data,
            received,
            self.config.sla.due_at(escalation.tier, received),
        )
        registered = self.store.register(task)
        if registered is Registered.DUPLICATE:
            try:
                self.client.tasks.delete(str(task_id))
            except ApiError as exc:
                if exc.status_code == 404:  # another poll (or replica) deleted it first
                    return None
                raise
            if self._metrics is not None:
                self._metrics.duplicates.add(1)
            log.warning(
                "labelstudio.duplicate_task_deleted",
                escalation_id=escalation.escalation_id,
                task_id=task_id,
            )
            return None
        return self.store.task(task_id)

    def _our_projects(self, refresh: bool = False) -> set[int]:
        with self._lock:
            if self.config.projects:
                return set(self._projects)
            if refresh or not self._projects:
                prefix = self.config.project_prefix
                found: Iterable[Any] = self.client.projects.list(search=prefix)
                self._projects = {
                    int(p.id)
                    for p in found
                    if p.id is not None and (p.title or "").startswith(prefix)
                }
            return set(self._projects)

    def _email(self, user_id: object) -> str:
        if not isinstance(user_id, int):
            return ""
        with self._lock:
            if user_id not in self._users:
                self._users = {int(u.id): (u.email or "") for u in self.client.users.list()}
            return self._users.get(user_id, "")


def _escalation(data: Mapping[str, Any]) -> Escalation | None:
    record = data.get(RECORD_KEY)
    if not isinstance(record, dict) or not record.keys() >= REQUIRED:
        return None
    try:
        return Escalation.from_dict(record)
    except TypeError:
        return None


def _sla_data(task: Task) -> dict[str, Any]:
    """The task's data with the deadline and level the bridge keeps."""
    due = datetime.fromtimestamp(task.due_at, UTC).isoformat(timespec="seconds")
    priority = 0 if task.escalation_level else task.data.get("priority", 0)
    return {
        **task.data,
        "due_at": due,
        "escalation_level": task.escalation_level,
        "priority": priority,
    }


def _after(task_id: int) -> dict[str, Any]:
    return {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": task_id}


def _seconds(moment: object) -> float:
    if isinstance(moment, datetime):
        return moment.timestamp()
    if isinstance(moment, str):
        try:
            return datetime.fromisoformat(moment).timestamp()
        except ValueError:
            return 0.0
    return 0.0
