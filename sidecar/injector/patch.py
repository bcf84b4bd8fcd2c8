"""A pod in, the JSONPatch (RFC 6902) that injects its sidecar out. No I/O here.

The patch only adds: the sidecar container (last among the init containers in
native mode, so the pod's own init containers still run first; last among the
containers otherwise), the volumes it needs, two annotations (``hitl.dev/status:
injected`` and ``kubectl.kubernetes.io/default-container``, so ``kubectl logs`` and
``exec`` still default to the model server) and, when the state lives on a volume
of the pod's own (``hitl.dev/state-volume``), the sidecar's group as the pod's
``fsGroup`` unless the pod sets one, so a freshly provisioned claim is writable by
the sidecar's user. A pod that already has a container named ``hitl-sidecar`` is
left alone, so applying the webhook twice, or to a pod copied from an injected one,
changes nothing.

Refused: a pod whose sidecar could not work as written, such as a drain time
(``hitl.dev/drain-seconds``) that does not fit in the pod's grace period."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sidecar.injector.annotations import (
    DRAIN_SECONDS,
    HEALTH_PORT,
    INJECT,
    METRICS_PORT,
    PORT,
    STATE_SIZE,
    STATE_VOLUME,
    STATUS,
    PodSettings,
    opted_in,
    read_settings,
)
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.container import (
    CONTAINER_NAME,
    PRESTOP_PAUSE_SECONDS,
    SIDECAR_UID,
    VOLUME_NAMES,
    JsonObject,
    sidecar_container,
    sidecar_volumes,
)
from sidecar.injector.errors import InjectionRefused
from sidecar.injector.quantity import parse_quantity

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
INJECTED = "injected"
DEFAULT_GRACE_SECONDS = 30  # the API server's default terminationGracePeriodSeconds
# Volume types the kubelet mounts read-only whatever the mount says.
READ_ONLY_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")


@dataclass(frozen=True, slots=True)
class Mutation:
    """What the injector does to one pod: a patch, or nothing and why."""

    patch: list[JsonObject] = field(default_factory=list)
    settings: PodSettings | None = None
    skipped: str = ""


def plan(
    pod: Mapping[str, Any], defaults: SidecarDefaults, claims: Mapping[str, str] | None = None
) -> Mutation:
    """The mutation for pod; raise InjectionRefused when it opts in but cannot be injected.

    claims: for a StatefulSet's pod template, its volumeClaimTemplates (name ->
    requested storage, "" when none), which the StatefulSet controller adds to each
    pod as volumes; a pod the API server admits already has them."""
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
    if settings.state_volume:
        _check_state_volume(settings, volumes, claims or {})
    settings = _fit_drain(settings, spec.get("terminationGracePeriodSeconds"))

    patch: list[JsonObject] = []
    patch += _annotations(metadata.get("annotations"), containers)
    container = sidecar_container(settings, defaults)
    patch += _append("/spec/initContainers" if settings.native else "/spec/containers",
                     spec.get("initContainers" if settings.native else "containers"),
                     [container])  # fmt: skip
    patch += _append("/spec/volumes", spec.get("volumes"), sidecar_volumes(settings))
    if settings.state_volume:
        patch += _fs_group(spec.get("securityContext"))
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


def _check_state_volume(
    settings: PodSettings, volumes: Sequence[JsonObject], claims: Mapping[str, str]
) -> None:
    """The volume hitl.dev/state-volume names is the pod's (or will be, as a claim
    template's), writable, and, when its size is known, holds hitl.dev/state-size."""
    name = settings.state_volume
    volume = next((v for v in volumes if v.get("name") == name), None)
    if volume is None and name not in claims:
        where = "volume or volumeClaimTemplate" if claims else "volume"
        raise InjectionRefused(f"{STATE_VOLUME}: the pod has no {where} named {name!r}")
    if volume is not None:
        kind = next((k for k in READ_ONLY_VOLUMES if k in volume), "")
        if kind:
            raise InjectionRefused(
                f"{STATE_VOLUME}: volume {name!r} is a {kind} volume, which is read-only; "
                "name a persistentVolumeClaim (or a StatefulSet's volumeClaimTemplate)"
            )
        return
    if _bytes(claims[name]) < parse_quantity(settings.state_size):
        raise InjectionRefused(
            f"{STATE_SIZE} ({settings.state_size}) is more than the volumeClaimTemplate "
            f"{name!r} requests ({claims[name]}): the spools may use 90 % of {STATE_SIZE}, so set "
            "it to the claim's size or less"
        )


def _bytes(storage: str) -> Decimal:
    """A claim's requested storage; unknown (none, or not a quantity, which the API
    server refuses itself) counts as unlimited."""
    try:
        return parse_quantity(storage)
    except ValueError:
        return Decimal("Infinity")


def _fit_drain(settings: PodSettings, grace: object) -> PodSettings:
    """settings with a drain time that fits in the pod's grace period: the annotated
    one (refused when it does not fit), or the default, shortened to fit."""
    grace_seconds = grace if isinstance(grace, int) else DEFAULT_GRACE_SECONDS
    pause = 0 if settings.native else PRESTOP_PAUSE_SECONDS
    room = grace_seconds - pause
    if not settings.drain_annotated:
        return replace(settings, drain_seconds=max(1, min(settings.drain_seconds, room)))
    if settings.drain_seconds <= room:
        return settings
    pause_text = f" plus the sidecar's {pause} s preStop pause" if pause else ""
    default_text = "" if isinstance(grace, int) else ", the default"
    raise InjectionRefused(
        f"{DRAIN_SECONDS} ({settings.drain_seconds} s){pause_text} does not fit in the pod's "
        f"terminationGracePeriodSeconds ({grace_seconds} s{default_text}): set "
        f"terminationGracePeriodSeconds to at least {settings.drain_seconds + pause} plus the "
        f"time the model server takes to stop, or lower {DRAIN_SECONDS}"
    )


def _fs_group(context: Mapping[str, Any] | None) -> list[JsonObject]:
    """The sidecar's group as the pod's fsGroup, so the kubelet makes the state volume
    group-writable for it; a pod's own fsGroup is kept (every container, the sidecar
    too, gets it as a supplementary group). OnRootMismatch: the ownership is changed
    once, not on every start."""
    wanted = {"fsGroup": SIDECAR_UID, "fsGroupChangePolicy": "OnRootMismatch"}
    if context is None:
        return [{"op": "add", "path": "/spec/securityContext", "value": wanted}]
    if "fsGroup" in context:
        return []
    return [
        {"op": "add", "path": f"/spec/securityContext/{key}", "value": value}
        for key, value in wanted.items()
        if key not in context
    ]


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
