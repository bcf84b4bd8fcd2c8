"""The manifests in k8s/: valid against the Kubernetes schemas, and consistent with
each other and with the code that reads them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sidecar.injector import annotations as a
from sidecar.injector.cli import render_object
from sidecar.injector.config import InjectorConfig, SidecarDefaults
from sidecar.injector.container import CONTAINER_NAME, SIDECAR_UID
from sidecar.injector.server import MUTATE_PATH
from sidecar.review.config import ReviewConfig
from tests.k8s.manifests import (
    OVERLAYS,
    Obj,
    build,
    env_of,
    find,
    kustomize_available,
    listed_files,
    load,
    of_kind,
    selects,
    validate,
)

needs_kustomize = pytest.mark.skipif(
    not kustomize_available(), reason="kubectl (with its built-in kustomize) is not installed"
)
SERVICES = ("hitl-registry", "hitl-review", "hitl-injector")


@pytest.mark.parametrize("path", sorted(set(listed_files())), ids=lambda p: p.name)
def test_every_listed_file_is_valid(path: Path) -> None:
    """Each resource file, on its own, validates (strict) at Kubernetes 1.29 and 1.33."""
    for obj in load(path):
        validate(obj)


@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_built_overlay_is_valid(overlay: str) -> None:
    """What kustomize builds from each overlay validates, object by object."""
    objects = build(overlay)
    assert objects
    for obj in objects:
        validate(obj)


@needs_kustomize
@pytest.mark.parametrize("overlay", ["overlays/single-node", "overlays/production"])
def test_each_service_has_probes_limits_and_a_locked_down_pod(overlay: str) -> None:
    """Every Deployment: probes, requests and a memory limit, non-root with a read-only
    root and no capabilities; and a Service, PodDisruptionBudget and NetworkPolicy."""
    objects = build(overlay)
    deployments = of_kind(objects, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(SERVICES)
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        assert deployment["metadata"]["namespace"] == "hitl-system"
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == SIDECAR_UID
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["livenessProbe"], name
            assert container["readinessProbe"], name
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]["memory"]
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
        for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            owned = find(objects, kind, name)
            selector = owned["spec"].get("podSelector") or owned["spec"]["selector"]
            if kind == "Service":
                selector = {"matchLabels": selector}
            assert selects(selector, labels), f"{kind}/{name} does not select its pods"


@needs_kustomize
@pytest.mark.parametrize("overlay", ["overlays/single-node", "overlays/production"])
def test_webhook_service_certificate_and_injector_agree(overlay: str) -> None:
    """The webhook calls the injector's Service on the path and port it serves, fails
    closed for opted-in pods only, and trusts the CA of the certificate the injector
    mounts, whose names cover the Service."""
    objects = build(overlay)
    (config,) = of_kind(objects, "MutatingWebhookConfiguration")
    (webhook,) = config["webhooks"]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["objectSelector"] == {"matchLabels": {a.INJECT: "true"}}
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn"
    assert {"kube-system", "hitl-system"} <= set(excluded["values"])
    target = webhook["clientConfig"]["service"]
    assert target["path"] == MUTATE_PATH
    service = find(objects, "Service", target["name"])
    assert service["metadata"]["namespace"] == target["namespace"]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == target["port"]]
    injector = find(objects, "Deployment", "hitl-injector")
    (container,) = injector["spec"]["template"]["spec"]["containers"]
    container_port = {p["name"]: p["containerPort"] for p in container["ports"]}[port["targetPort"]]
    env = env_of(container)
    injector_config = InjectorConfig.load(env=env)  # the injector accepts its own manifest
    assert injector_config.listen.endswith(f":{container_port}")
    assert injector_config.sidecar.image == container["image"]  # kustomize's replacement
    assert ":" in container["image"]
    assert not container["image"].startswith("hitl-sidecar")

    namespace, _, certificate_name = config["metadata"]["annotations"][
        "cert-manager.io/inject-ca-from"
    ].partition("/")
    certificate = find(objects, "Certificate", certificate_name)
    assert certificate["metadata"]["namespace"] == namespace
    assert f"{target['name']}.{target['namespace']}.svc" in certificate["spec"]["dnsNames"]
    issuer = find(objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
    assert "ca" in issuer["spec"]  # renewals keep the CA the API server trusts
    volumes = {v["name"]: v for v in injector["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    tls_volume = volumes[mounts[str(injector_config.tls_cert.parent)]]
    assert tls_volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    assert str(injector_config.tls_key.parent) == str(injector_config.tls_cert.parent)


@needs_kustomize
@pytest.mark.parametrize(
    ("overlay", "sink"),
    [
        ("overlays/single-node", "review://hitl-review.hitl-system.svc:7432"),
        ("overlays/production", "nats://nats.nats.svc:4222"),
    ],
)
def test_injected_sidecars_are_pointed_at_running_services(overlay: str, sink: str) -> None:
    """The injector's default registry is the registry Service's address and port; the
    single-node sink is the review queue's Service, production's is NATS."""
    objects = build(overlay)
    injector = find(objects, "Deployment", "hitl-injector")
    defaults = SidecarDefaults.load(
        env=env_of(injector["spec"]["template"]["spec"]["containers"][0])
    )
    assert defaults.sink == sink
    host, _, port = defaults.registry.rpartition(":")
    name, namespace, _ = host.split(".", 2)
    registry = find(objects, "Service", name)
    assert registry["metadata"]["namespace"] == namespace
    assert int(port) in [p["port"] for p in registry["spec"]["ports"]]
    if sink.startswith("review://"):
        host, _, port = sink.removeprefix("review://").rpartition(":")
        review = find(objects, "Service", host.split(".")[0])
        assert int(port) in [p["port"] for p in review["spec"]["ports"]]
    for name in ("hitl-registry", "hitl-review"):
        ingress = find(objects, "NetworkPolicy", name)["spec"]["ingress"][0]["from"]
        assert {"matchLabels": {a.INJECT: "true"}} in [peer.get("podSelector") for peer in ingress]


@needs_kustomize
def test_single_node_runs_one_of_each_on_sqlite_volumes() -> None:
    """Single node: one replica each, SQLite on claimed volumes, replaced not rolled;
    the review queue accepts its own settings."""
    objects = build("overlays/single-node")
    claims = {c["metadata"]["name"] for c in of_kind(objects, "PersistentVolumeClaim")}
    for name, var in (("hitl-registry", "HITL_REGISTRY_DB"), ("hitl-review", "HITL_REVIEW_DB")):
        deployment = find(objects, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert env_of(container)[var].startswith("sqlite:/var/lib/hitl/")
        volumes = {v["name"]: v for v in pod["volumes"]}
        data = volumes[next(m["name"] for m in container["volumeMounts"]
                            if m["mountPath"] == "/var/lib/hitl")]  # fmt: skip
        assert data["persistentVolumeClaim"]["claimName"] in claims
    review = find(objects, "Deployment", "hitl-review")["spec"]["template"]["spec"]["containers"][0]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in review["args"])
    ReviewConfig.load({k.replace("-", "_"): v for k, v in flags.items()}, env_of(review))


@needs_kustomize
def test_production_is_replicated_over_postgres() -> None:
    """Production: three replicas, the database URLs from a Secret, rolled with surge."""
    objects = build("overlays/production")
    for name in ("hitl-registry", "hitl-review"):
        deployment = find(objects, "Deployment", name)
        assert deployment["spec"]["replicas"] == 3
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        db = next(e for e in env if e["name"].endswith("_DB"))
        assert db["valueFrom"]["secretKeyRef"]["name"] == "hitl-postgres"
        assert "value" not in db
    assert not of_kind(objects, "PersistentVolumeClaim")


@needs_kustomize
def test_the_example_model_once_injected_is_a_valid_deployment() -> None:
    """The example opts in; rendered through the injector with the injector's own
    settings it is still a valid Deployment, its sidecar routes on loopback only, and
    its NetworkPolicy admits other pods to the model's port, never the sidecar's
    Router or health port."""
    injector = find(build("overlays/single-node"), "Deployment", "hitl-injector")
    defaults = SidecarDefaults.load(
        env=env_of(injector["spec"]["template"]["spec"]["containers"][0])
    )
    example = build("example")
    deployment = find(example, "Deployment", "fraud-model")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"][a.INJECT] == "true"
    rendered: Obj = render_object(copy.deepcopy(deployment), defaults)
    validate(rendered)
    pod = rendered["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == CONTAINER_NAME]
    router_host, _, router_port = env_of(sidecar)["HITL_LISTEN"].rpartition(":")
    assert router_host == "127.0.0.1"
    health_port = sidecar["readinessProbe"]["grpc"]["port"]
    assert env_of(sidecar)["HITL_HEALTH_LISTEN"] == f"0.0.0.0:{health_port}"
    policy = find(example, "NetworkPolicy", "fraud-model")
    open_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert not open_ports & {int(router_port), health_port}
    assert 8080 in open_ports
    namespace = find(example, "Namespace", "models")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
