"""Loading, building and validating the manifests in k8s/.

Overlays are built with kustomize as ``kubectl kustomize`` ships it, when kubectl is
on the machine; every file a kustomization lists is also validated on its own, so
the schemas are checked with or without kubectl. Core kinds are validated against
the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail);
cert-manager's two kinds and the Prometheus Operator's three, which those schemas
do not cover, are checked for the fields this project relies on."""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = (
    "overlays/single-node",
    "overlays/production",
    "example",
    "example/statefulset",
    "monitoring",
    "monitoring/operator",
)
# The schema versions every manifest is validated against: 1.29, the first with
# native sidecars on by default, and 1.33, where they are GA.
SCHEMA_VERSIONS = ("1.29.0", "1.33.0")
CERT_MANAGER_KINDS = {"Issuer", "Certificate"}
PROMETHEUS_OPERATOR_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}

Obj = dict[str, Any]


def kustomize_available() -> bool:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return False
    probe = subprocess.run(
        [kubectl, "kustomize", "--help"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@functools.cache
def build(directory: str) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize k8s/<directory>`` prints."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def listed_files() -> Iterator[Path]:
    """Every file a kustomization.yaml lists under resources (not patches)."""
    for kustomization in sorted(K8S.rglob("kustomization.yaml")):
        for entry in yaml.safe_load(kustomization.read_text()).get("resources", []):
            path = (kustomization.parent / entry).resolve()
            if path.is_file():
                yield path


def load(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(obj: Obj) -> None:
    """Raise unless obj is valid (see the module docstring)."""
    if obj.get("apiVersion") == "cert-manager.io/v1" and obj.get("kind") in CERT_MANAGER_KINDS:
        check_cert_manager(obj)
        return
    if obj.get("apiVersion") == "monitoring.coreos.com/v1":
        assert obj.get("kind") in PROMETHEUS_OPERATOR_KINDS, obj.get("kind")
        check_prometheus_operator(obj)
        return
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def check_cert_manager(obj: Obj) -> None:
    spec = obj["spec"]
    assert obj["metadata"]["name"]
    if obj["kind"] == "Issuer":
        assert len(spec) == 1
        assert set(spec) <= {"selfSigned", "ca"}
        if "ca" in spec:
            assert set(spec["ca"]) == {"secretName"}
        return
    known = {"secretName", "issuerRef", "isCA", "commonName", "dnsNames", "duration",
             "renewBefore", "privateKey", "usages"}  # fmt: skip
    assert set(spec) <= known, set(spec) - known
    assert spec["secretName"]
    assert spec["issuerRef"]["kind"] == "Issuer"
    assert set(spec["privateKey"]) <= {"algorithm", "size", "rotationPolicy"}


def check_prometheus_operator(obj: Obj) -> None:
    """The fields of PodMonitor, ServiceMonitor and PrometheusRule this project
    uses, as the Operator's v1 CRDs name them (an unknown field fails)."""
    assert obj["metadata"]["name"]
    spec = obj["spec"]
    if obj["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert set(group) <= {"name", "interval", "rules"}, set(group)
            for rule in group["rules"]:
                known = {"alert", "record", "expr", "for", "labels", "annotations"}
                assert set(rule) <= known, set(rule) - known
                assert ("alert" in rule) != ("record" in rule)
        return
    endpoints_key = "podMetricsEndpoints" if obj["kind"] == "PodMonitor" else "endpoints"
    assert set(spec) <= {"selector", "namespaceSelector", endpoints_key}, set(spec)
    assert set(spec["selector"]) <= {"matchLabels", "matchExpressions"}
    assert set(spec.get("namespaceSelector", {})) <= {"any", "matchNames"}
    for endpoint in spec[endpoints_key]:
        assert set(endpoint) <= {"port", "path", "interval", "relabelings"}, set(endpoint)
        assert isinstance(endpoint["port"], str)  # a port's name
        for relabeling in endpoint.get("relabelings", []):
            known = {"action", "sourceLabels", "targetLabel", "regex", "replacement"}
            assert set(relabeling) <= known, set(relabeling) - known
            assert relabeling.get("action", "replace") in {"replace", "keep", "drop"}


def find(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def of_kind(objects: tuple[Obj, ...], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def env_of(container: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects labels."""
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
