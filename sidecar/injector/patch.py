"""A pod in, the JSONPatch (RFC 6902) that injects its sidecar out. No I/O here.

The patch only adds: the sidecar container (last among the init containers in
native mode, so the pod's own init containers still run first; last among the
containers otherwise), the volumes it needs, and two annotations: ``hitl.dev/status:
injected`` and ``kubectl.kubernetes.io/default-container`` (so ``kubectl logs`` and
``exec`` still default to the model server). A pod that already has a container
named ``hitl-sidecar`` is left alone, so applying the webhook twice, or to a pod
copied from an injected one, changes nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.injector.annotations import (
    HEALTH_PORT,
    INJECT,
    METRICS_PORT,
    PORT,
    STATE_VOLUME,
    STATUS,
    PodSettings,
    opted_in,
    read_settings,
)
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.container import (
    CONTAINER_NAME,
    VOLUME_NAMES,
    JsonObject,
    sidecar_container,
    sidecar_volumes,
)
from sidecar.injector.errors import InjectionRefused

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
INJECTED = "injected"


@dataclass(frozen=True, slots=True)
class Mutation:
    """What the injector does to one pod: a patch, or nothing and why."""

    patch: list[JsonObject] = field(default_factory=list)
    settings: PodSettings | None = None
    skipped: str = ""


def plan(pod: Mapping[str, Any], defaults: SidecarDefaults) -> Mutation:
    """The mutation for pod; raise InjectionRefused when it opts in but cannot be injected."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if not opted_in(metadata.get("labels") or {}):
        return Mutation(skipped=f'not opted in (label {INJECT} is not "true")')
    containers: list[JsonObject] = list(spec.get("containers") or [])
    init_containers: list[JsonObject] = list(spec.get("initContainers") or [])
    if any(c.get("name") == CONTAINER_NAME for c in [*containers, *init_containers]):
        return Mutation(skipped=f"already injected (it has a container named {CONTAINER_NAME})")
    if spec.get("hostNetwork"):
        raise InjectionRefused(
            "a pod on the host network cannot be injected: the sidecar would listen on the node"
        )
    settings = read_settings(metadata.get("annotations") or {}, defaults)
    volumes: list[JsonObject] = list(spec.get("volumes") or [])
    _check_fits(settings, [*init_containers, *containers], volumes)

    patch: list[JsonObject] = []
    patch += _annotations(metadata.get("annotations"), containers)
    container = sidecar_container(settings, defaults)
    patch += _append("/spec/initContainers" if settings.native else "/spec/containers",
                     spec.get("initContainers" if settings.native else "containers"),
                     [container])  # fmt: skip
    patch += _append("/spec/volumes", spec.get("volumes"), sidecar_volumes(settings))
    return Mutation(patch, settings)


def _check_fits(
    settings: PodSettings, containers: Sequence[JsonObject], volumes: Sequence[JsonObject]
) -> None:
    for container in containers:
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            for name, wanted in (
                (PORT, settings.port),
                (HEALTH_PORT, settings.health_port),
                (METRICS_PORT, settings.metrics_port),
            ):
                if number == wanted:
                    raise InjectionRefused(
                        f"{name}: port {wanted} is already used by container "
                        f"{container.get('name')!r}; choose another with {name}"
                    )
    names = {str(v.get("name", "")) for v in volumes}
    taken = sorted(names & set(VOLUME_NAMES))
    if taken:
        raise InjectionRefused(
            f"the pod already has a volume named {taken[0]!r}, which the sidecar needs; rename it"
        )
    if settings.state_volume and settings.state_volume not in names:
        raise InjectionRefused(
            f"{STATE_VOLUME}: the pod has no volume named {settings.state_volume!r}"
        )


def _annotations(
    existing: Mapping[str, str] | None, containers: Sequence[JsonObject]
) -> list[JsonObject]:
    wanted = {STATUS: INJECTED}
    if containers and DEFAULT_CONTAINER not in (existing or {}):
        wanted[DEFAULT_CONTAINER] = str(containers[0].get("name", ""))
    if existing is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": wanted}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": value}
        for key, value in wanted.items()
    ]


def _append(path: str, existing: object, items: list[JsonObject]) -> list[JsonObject]:
    if existing is None:
        return [{"op": "add", "path": path, "value": items}]
    return [{"op": "add", "path": f"{path}/-", "value": item} for item in items]


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901): ``~`` then ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def apply(document: JsonObject, patch: Sequence[JsonObject]) -> JsonObject:
    """The document with patch applied: the "add" operations this module writes,
    nothing more (``hitl injector render`` uses it; the tests use a full RFC 6902
    implementation to check the two agree)."""
    import copy

    result = copy.deepcopy(document)
    for op in patch:
        if op["op"] != "add":
            raise ValueError(f"only add operations are supported, got {op['op']!r}")
        *parents, last = [
            part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]
        ]
        target: Any = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            target[last] = copy.deepcopy(op["value"])
    return result
