"""Pods, AdmissionReviews and schema validation for the injector's tests."""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate

from sidecar.config import SidecarConfig
from sidecar.injector import annotations as a

# Kubernetes versions every injected pod is validated against (strict: unknown
# fields fail): 1.29, the first with native sidecars on by default, and 1.33, where
# they are GA. Plain-container injection is also validated against 1.27.
SCHEMA_VERSIONS = ("1.29.0", "1.33.0")
PLAIN_SCHEMA_VERSIONS = ("1.27.0", *SCHEMA_VERSIONS)


def pod(
    annotations: dict[str, str] | None = None,
    *,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A pod as a ReplicaSet creates it (generateName, no name), opted in by default."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "fraud-model-7d9f-",
            "namespace": "models",
            "labels": {"app": "fraud-model", a.INJECT: "true"} if labels is None else labels,
            "annotations": {a.MODEL: "fraud"} if annotations is None else annotations,
        },
        "spec": {
            "containers": [
                {
                    "name": "model",
                    "image": "registry.example.com/fraud-model:1.4.2",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ],
            **spec,
        },
    }


def admission_review(obj: dict[str, Any], *, operation: str = "CREATE") -> dict[str, Any]:
    """The AdmissionReview v1 the API server sends for obj (a Pod)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": obj["metadata"].get("namespace", "models"),
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def apply_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """obj with patch applied by a full RFC 6902 implementation."""
    result: dict[str, Any] = jsonpatch.JsonPatch(patch).apply(copy.deepcopy(obj))
    return result


def validate(obj: dict[str, Any], versions: tuple[str, ...] = SCHEMA_VERSIONS) -> None:
    """Raise kubernetes_validate.ValidationError unless obj is valid at every version."""
    named = copy.deepcopy(obj)
    named["metadata"].setdefault("name", "fraud-model-7d9f-x2x9z")  # the API server names it
    for version in versions:
        kubernetes_validate.validate(named, version, strict=True)


def sidecar_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The injected container, wherever it went."""
    spec = obj["spec"]
    found = [
        c
        for c in [*spec.get("initContainers", []), *spec["containers"]]
        if c["name"] == "hitl-sidecar"
    ]
    assert len(found) == 1, found
    container: dict[str, Any] = found[0]
    return container


def volumes_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod's volumes by name."""
    return {v["name"]: v for v in obj["spec"]["volumes"]}


def mounted_locally(sidecar: dict[str, Any], root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """A directory under root for each of sidecar's mounts (by mount path), and its
    environment's literal values with the mounted paths mapped into them: what the
    sidecar's own config loader would see, once the test writes the mounted files."""
    mounted = {m["mountPath"]: root / m["name"] for m in sidecar["volumeMounts"]}
    for directory in mounted.values():
        directory.mkdir(parents=True)

    def local(value: str) -> str:
        for path, directory in mounted.items():
            if value.startswith(path + "/"):
                return str(directory) + value[len(path) :]
        return value

    return mounted, {e["name"]: local(e["value"]) for e in sidecar["env"] if "value" in e}


def loaded_as_mounted(
    sidecar: dict[str, Any], root: Path, files: dict[str, str | bytes]
) -> tuple[SidecarConfig, dict[str, Path]]:
    """The sidecar's own config as it loads in the pod, once the kubelet has mounted
    files (by their path in the container) and an empty policy file; with the
    directories ``mounted_locally`` made under root."""
    mounted, env = mounted_locally(sidecar, root)
    for path, content in {"/etc/hitl/policy/policy.yaml": "", **files}.items():
        directory, name = path.rsplit("/", 1)
        if isinstance(content, bytes):
            (mounted[directory] / name).write_bytes(content)
        else:
            (mounted[directory] / name).write_text(content)
    return SidecarConfig.load(env=env), mounted
