"""The Label Studio sink: each escalation becomes a task in its model's project,
with the input where the project's labeling config reads it, the model's answer as
a prediction scored by its calibrated confidence (so the data manager can sort by
it), and the escalation in the task's data (``sidecar.core.labelstudio``). Uses the
official label-studio-sdk (the ``labelstudio`` extra), imported only when this sink
is chosen.

Idempotent by escalation id: before importing a batch the sink asks Label Studio
which of its escalation ids a task already carries (a data-manager filter on
``data.escalation_id``) and imports only the others, so a batch sent again after a
lost answer makes no second task. An escalation is in one sidecar's spool only, and
its forwarder sends one batch at a time, so two forwarders never send the same id;
the one window left (an import Label Studio finished after the sink gave up on it,
then the resend looked before it was visible) is closed by the bridge, which keeps
one task per escalation id in its store and deletes a later duplicate
(``hitl_labelstudio_duplicates_total``).

Projects: HITL_LABELSTUDIO_PROJECTS names each model's, and the escalations of a
model it does not name are refused (dead letters, to replay once it names one);
without it, each model gets the project titled ``<prefix><model>``, created on its
first escalation with a classification config over the model's labels.

Label Studio unreachable, a 5xx, 401, 403, 404 or 429 (a token or project to fix,
or a server to wait for): the batch is sent again later. A 400 on an import refuses
that import's escalations for good (dead letters, with Label Studio's message)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any

import httpx
import structlog
from label_studio_sdk import AsyncLabelStudio
from label_studio_sdk.core.api_error import ApiError

from sidecar.core.labelstudio import (
    ConfigNames,
    LabelConfigError,
    config_names,
    labeling_config,
    task_for,
)
from sidecar.errors import SinkUnavailable
from sidecar.escalation.messages import LabelsOf, with_labels
from sidecar.escalation.sinks.base import Rejection, Spooled
from sidecar.escalation.sinks.labelstudio_settings import LabelStudioSinkConfig
from sidecar.escalation.sinks.review import no_labels
from sidecar.settings import read_token

log = structlog.get_logger("hitl.forwarder")

LOOKUP_CHUNK = 50  # escalation ids per data-manager filter
RETRYABLE = frozenset({401, 403, 404, 408, 409, 429})


class LabelStudioSink:
    name = "labelstudio"

    def __init__(
        self,
        url: str,
        config: LabelStudioSinkConfig,
        timeout: float,
        labels_of: LabelsOf | None = None,
    ) -> None:
        assert config.token_file is not None  # LabelStudioSinkConfig.load requires it
        self.url = url
        self._config = config
        self._labels_of = labels_of or no_labels
        self._http = httpx.AsyncClient(timeout=timeout)
        # The SDK's client takes its arguments untyped (*args, **kwargs).
        self._client = AsyncLabelStudio(  # type: ignore[no-untyped-call]
            base_url=url,
            api_key=read_token(config.token_file, "HITL_LABELSTUDIO_TOKEN_FILE"),
            httpx_client=self._http,
            max_retries=0,  # the forwarder retries, with its backoff
        )
        self._projects: dict[str, int] = dict(config.projects)
        self._names: dict[int, ConfigNames] = {}

    async def deliver(self, batch: Sequence[Spooled]) -> list[Rejection]:
        records, refused = [], []
        for item in batch:
            try:
                records.append(with_labels(item.record, self._labels_of))
            except (KeyError, TypeError, ValueError) as exc:
                refused.append(Rejection(item.key, f"not an escalation record: {exc!r}"))
        ordered = sorted(records, key=lambda r: str(r["model"]))
        try:
            for model, group in groupby(ordered, key=lambda r: str(r["model"])):
                refused += await self._deliver_model(model, list(group))
        except (httpx.HTTPError, ApiError) as exc:
            raise SinkUnavailable(f"Label Studio {self.url}: {_describe(exc)}") from exc
        return refused

    async def close(self) -> None:
        await self._http.aclose()

    async def _deliver_model(
        self, model: str, records: Sequence[Mapping[str, Any]]
    ) -> list[Rejection]:
        if self._config.projects and model not in self._projects:
            reason = f"model {model!r} has no project in HITL_LABELSTUDIO_PROJECTS"
            log.error("forwarder.labelstudio_no_project", model=model)
            return [Rejection(str(r["escalation_id"]), reason) for r in records]
        project: int | None = None
        try:
            project = await self._project(model, records[0])
            return await self._deliver_to(project, model, records)
        except LabelConfigError as exc:
            # Not the escalations' fault: an operator fixes the project; retried meanwhile.
            raise SinkUnavailable(f"Label Studio project of model {model!r}: {exc}") from exc
        except ApiError as exc:
            if exc.status_code == 404 and project is not None:
                # Deleted since: look it up (or make it) again on the next try.
                self._names.pop(project, None)
                if not self._config.projects:
                    self._projects.pop(model, None)
            raise

    async def _deliver_to(
        self, project: int, model: str, records: Sequence[Mapping[str, Any]]
    ) -> list[Rejection]:
        names = await self._config_names(project)
        held = await self._existing(project, [str(r["escalation_id"]) for r in records])
        new = [r for r in records if str(r["escalation_id"]) not in held]
        if not new:
            return []
        try:
            tasks: list[Any] = [task_for(r, names) for r in new]  # the SDK types them as Any
            await self._client.projects.import_tasks(project, request=tasks, return_task_ids=True)
        except ApiError as exc:
            if exc.status_code is None or exc.status_code >= 500 or exc.status_code in RETRYABLE:
                raise
            reason = f"Label Studio refused the import: {_describe(exc)}"
            log.error("forwarder.labelstudio_refused", model=model, project=project, error=reason)
            return [Rejection(str(r["escalation_id"]), reason) for r in new]
        return []

    async def _existing(self, project: int, escalation_ids: Sequence[str]) -> set[str]:
        """The escalation ids among escalation_ids that a task of project carries."""
        found: set[str] = set()
        for start in range(0, len(escalation_ids), LOOKUP_CHUNK):
            chunk = escalation_ids[start : start + LOOKUP_CHUNK]
            query = {"filters": {"conjunction": "or", "items": [_equal(i) for i in chunk]}}
            # The SDK's extended tasks client is untyped.
            pager = await self._client.tasks.list(  # type: ignore[no-untyped-call]
                project=project, query=json.dumps(query), fields="task_only", page_size=100
            )
            async for task in pager:
                found.add(str((task.data or {}).get("escalation_id", "")))
        return found

    async def _project(self, model: str, record: Mapping[str, Any]) -> int:
        """model's project: the configured one, else the one titled for it, made now
        (with a config over the record's labels) when there is none."""
        if model in self._projects:
            return self._projects[model]
        title = f"{self._config.project_prefix}{model}"
        # The SDK's extended projects client is untyped.
        pager = await self._client.projects.list(title=title)  # type: ignore[no-untyped-call]
        ids = sorted([int(p.id) async for p in pager if p.title == title and p.id])
        if not ids:
            labels = list(record.get("labels") or ())
            if not labels:
                raise LabelConfigError(
                    f"no project titled {title!r}, and the escalation carries no labels to"
                    " make one: name it in HITL_LABELSTUDIO_PROJECTS"
                )
            made = await self._client.projects.create(
                title=title, label_config=labeling_config(labels)
            )
            assert made.id is not None
            log.info("forwarder.labelstudio_project_created", model=model, project=made.id)
            ids = [int(made.id)]
        # Two sidecars may each have made one: the oldest is everybody's.
        self._projects[model] = ids[0]
        return ids[0]

    async def _config_names(self, project: int) -> ConfigNames:
        if project not in self._names:
            found = await self._client.projects.get(project)
            self._names[project] = config_names(found.parsed_label_config or {})
        return self._names[project]


def _equal(escalation_id: str) -> dict[str, str]:
    return {
        "filter": "filter:tasks:data.escalation_id",
        "operator": "equal",
        "type": "String",
        "value": escalation_id,
    }


def _describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status_code}: {str(exc.body)[:500]}"
    return f"{type(exc).__name__}: {exc}"
