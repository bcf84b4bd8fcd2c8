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
from sidecar.injector.patch import apply, plan
from sidecar.injector.server import MUTATE_PATH
from sidecar.review.config import ReviewConfig
from tests.certs import Authority
from tests.k8s.manifests import (
    K8S,
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
SERVICES = ("hitl-registry", "hitl-review", "hitl-feedback", "hitl-monitor", "hitl-injector")
# The gRPC services and the variables naming their serving certificate and key.
GRPC_SERVERS = {
    "hitl-registry": "HITL_REGISTRY_TLS",
    "hitl-review": "HITL_REVIEW_TLS",
    "hitl-feedback": "HITL_FEEDBACK_TLS",
}


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
@pytest.mark.parametrize("overlay", ["overlays/single-node", "overlays/production"])
def test_the_injector_runs_at_a_priority_of_its_own(overlay: str) -> None:
    """The injector's PriorityClass ships with it: no system-* class, which clusters
    such as GKE admit outside kube-system only under a ResourceQuota; the highest
    value a class of our own may have, and no default for other pods."""
    objects = build(overlay)
    injector = find(objects, "Deployment", "hitl-injector")
    name = injector["spec"]["template"]["spec"]["priorityClassName"]
    assert not name.startswith("system-")
    priority = find(objects, "PriorityClass", name)
    assert "namespace" not in priority["metadata"]  # cluster-scoped
    assert priority["value"] == 1_000_000_000  # the most a non-system class may have
    assert priority["globalDefault"] is False


@needs_kustomize
@pytest.mark.parametrize(
    ("overlay", "sink"),
    [
        ("overlays/single-node", "review://hitl-review.hitl-system.svc:7432"),
        ("overlays/production", "tls://nats.nats.svc:4222"),
    ],
)
def test_injected_sidecars_are_pointed_at_running_services(overlay: str, sink: str) -> None:
    """The injector's default registry is the registry Service's address and port, its
    default feedback the feedback service's; the single-node sink is the review
    queue's Service, production's is NATS."""
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
    host, _, port = defaults.feedback.rpartition(":")
    name, namespace, _ = host.split(".", 2)
    feedback = find(objects, "Service", name)
    assert (name, feedback["metadata"]["namespace"]) == ("hitl-feedback", namespace)
    assert int(port) in [p["port"] for p in feedback["spec"]["ports"] if p["name"] == "grpc"]
    if sink.startswith("review://"):
        host, _, port = sink.removeprefix("review://").rpartition(":")
        review = find(objects, "Service", host.split(".")[0])
        assert int(port) in [p["port"] for p in review["spec"]["ports"]]
    for name in ("hitl-registry", "hitl-review"):
        ingress = find(objects, "NetworkPolicy", name)["spec"]["ingress"][0]["from"]
        assert {"matchLabels": {a.INJECT: "true"}} in [peer.get("podSelector") for peer in ingress]


@needs_kustomize
def test_single_node_runs_one_of_each_on_sqlite_volumes() -> None:
    """Single node: one replica each, SQLite on claimed volumes, replaced not rolled."""
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


@needs_kustomize
@pytest.mark.parametrize("overlay", ["overlays/single-node", "overlays/production"])
def test_the_review_queue_sends_resolutions_to_the_feedback_service(
    overlay: str, tmp_path: Path
) -> None:
    """The review queue calls the feedback service's Service on its gRPC port, with its
    token mounted read-only from a Secret and, in production, the CA of the feedback
    service's certificate (the CA's certificate only); the review queue's own config
    loader accepts its settings once the mounted files are there."""
    objects = build(overlay)
    pod = find(objects, "Deployment", "hitl-review")["spec"]["template"]["spec"]
    (review,) = pod["containers"]
    env = env_of(review)
    host, _, port = env["HITL_REVIEW_FEEDBACK"].rpartition(":")
    feedback = find(objects, "Service", host.split(".")[0])
    assert feedback["metadata"]["name"] == "hitl-feedback"
    assert int(port) in [p["port"] for p in feedback["spec"]["ports"] if p["name"] == "grpc"]
    token = _mounted_from(pod, review, env["HITL_REVIEW_FEEDBACK_TOKEN_FILE"])["secret"]
    assert token["items"] == [{"key": "token", "path": "token"}]
    authority = Authority(tmp_path / "pki")
    served = authority.issue("hitl-review", server=True)
    files = {
        "HITL_REVIEW_FEEDBACK_TOKEN_FILE": tmp_path / "token",
        "HITL_REVIEW_FEEDBACK_CA": authority.cert,
        "HITL_REVIEW_TLS_CERT": served.cert,
        "HITL_REVIEW_TLS_KEY": served.key,
        "HITL_REVIEW_CONSOLE_SECRET_FILE": tmp_path / "console-key",
    }
    files["HITL_REVIEW_FEEDBACK_TOKEN_FILE"].write_text("r3view-feedback\n")
    files["HITL_REVIEW_CONSOLE_SECRET_FILE"].write_text("c" * 64)
    local = {**env, **{var: str(path) for var, path in files.items() if var in env}}
    if not local["HITL_REVIEW_DB"]:  # from the Secret hitl-postgres
        local["HITL_REVIEW_DB"] = "postgresql://review@db.example.com:5432/review"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in review["args"])
    config = ReviewConfig.load({k.replace("-", "_"): v for k, v in flags.items()}, local)
    assert config.feedback == env["HITL_REVIEW_FEEDBACK"]
    if overlay == "overlays/production":
        ca = _mounted_from(pod, review, env["HITL_REVIEW_FEEDBACK_CA"])["secret"]
        assert ca["secretName"] == find(objects, "Certificate", "hitl-ca")["spec"]["secretName"]
        assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the CA's key
        certificate = next(
            c for c in of_kind(objects, "Certificate")
            if c["spec"]["secretName"] == "hitl-feedback-tls"
        )  # fmt: skip
        assert host in certificate["spec"]["dnsNames"]
    else:
        assert "HITL_REVIEW_FEEDBACK_CA" not in env


@pytest.mark.parametrize("overlay", ["overlays/single-node", "overlays/production"])
@needs_kustomize
def test_the_review_console_is_served_behind_its_proxy_with_a_shared_key(overlay: str) -> None:
    """The review queue serves its web console on the Service's console port, its
    sessions signed with a key every replica reads from the same Secret (mounted
    read-only); the NetworkPolicy admits to that port only pods labelled as the
    console's proxy; in production the console is HTTPS with the queue's certificate."""
    objects = build(overlay)
    pod = find(objects, "Deployment", "hitl-review")["spec"]["template"]["spec"]
    (review,) = pod["containers"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in review["args"])
    ports = {p["name"]: p["containerPort"] for p in review["ports"]}
    assert flags["console-listen"] == f"0.0.0.0:{ports['console']}"
    service = find(objects, "Service", "hitl-review")
    assert {"name": "console", "port": ports["console"], "targetPort": "console"} in service[
        "spec"
    ]["ports"]
    env = env_of(review)
    key = _mounted_from(pod, review, env["HITL_REVIEW_CONSOLE_SECRET_FILE"])["secret"]
    assert key == {"secretName": "hitl-review-console", "items": [{"key": "key", "path": "key"}]}
    policy = find(objects, "NetworkPolicy", "hitl-review")
    admitted = [
        rule["from"] for rule in policy["spec"]["ingress"]
        if ports["console"] in [p["port"] for p in rule["ports"]]
    ]  # fmt: skip
    assert admitted == [
        [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"hitl.dev/console-proxy": "true"}},
            }
        ]
    ]
    assert ("HITL_REVIEW_TLS_CERT" in env) == (overlay == "overlays/production")


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
    Router or health port; it sends decision records to the feedback service. Through
    production's injector (TLS, NATS credentials) it is valid too."""
    example = build("example")
    deployment = find(example, "Deployment", "fraud-model")
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"][a.INJECT] == "true"
    policy = find(example, "NetworkPolicy", "fraud-model")
    open_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert 8080 in open_ports
    for overlay in ("overlays/single-node", "overlays/production"):
        injector = find(build(overlay), "Deployment", "hitl-injector")
        defaults = SidecarDefaults.load(
            env=env_of(injector["spec"]["template"]["spec"]["containers"][0])
        )
        rendered: Obj = render_object(copy.deepcopy(deployment), defaults)
        validate(rendered)
        pod = rendered["spec"]["template"]["spec"]
        (sidecar,) = [c for c in pod["initContainers"] if c["name"] == CONTAINER_NAME]
        env = env_of(sidecar)
        router_host, _, router_port = env["HITL_LISTEN"].rpartition(":")
        assert router_host == "127.0.0.1"
        health_port = sidecar["readinessProbe"]["grpc"]["port"]
        assert env["HITL_HEALTH_LISTEN"] == f"0.0.0.0:{health_port}"
        assert not open_ports & {int(router_port), health_port}
        assert env["HITL_FEEDBACK"] == defaults.feedback
        assert env["HITL_FEEDBACK_TOKEN_FILE"].endswith("/token")
    namespace = find(example, "Namespace", "models")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    budget = find(example, "PodDisruptionBudget", "fraud-model")
    assert selects(budget["spec"]["selector"], template["metadata"]["labels"])
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@needs_kustomize
def test_the_statefulset_recipe_keeps_each_spool_on_its_own_claim() -> None:
    """The StatefulSet recipe, rendered through the injector with the injector's own
    settings, is a valid StatefulSet whose sidecar keeps its state on the claim
    template, writable through the injected fsGroup, with a drain time that fits the
    grace period; the pod its controller creates (the claim now a volume) is admitted
    the same way and is a valid Pod; a PodDisruptionBudget covers its pods."""
    injector = find(build("overlays/production"), "Deployment", "hitl-injector")
    defaults = SidecarDefaults.load(
        env=env_of(injector["spec"]["template"]["spec"]["containers"][0])
    )
    objects = build("example/statefulset")
    statefulset = find(objects, "StatefulSet", "fraud-model")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations[a.STATE_VOLUME] == claim["metadata"]["name"]
    assert annotations[a.STATE_SIZE] == claim["spec"]["resources"]["requests"]["storage"]
    rendered: Obj = render_object(copy.deepcopy(statefulset), defaults)
    validate(rendered)
    pod_spec = rendered["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod_spec["initContainers"] if c["name"] == CONTAINER_NAME]
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts[env_of(sidecar)["HITL_STATE_DIR"]] == claim["metadata"]["name"]
    assert "ephemeral-storage" not in sidecar["resources"]["requests"]
    assert pod_spec["securityContext"]["fsGroup"] == SIDECAR_UID
    assert pod_spec["securityContext"]["runAsUser"] == 20001  # the pod's own, kept
    drain = int(env_of(sidecar)["HITL_SHUTDOWN_GRACE_SECONDS"])
    assert drain == int(annotations[a.DRAIN_SECONDS]) < pod_spec["terminationGracePeriodSeconds"]

    # At admission: the StatefulSet controller has added the claim as a volume.
    template = statefulset["spec"]["template"]
    name = f"{statefulset['metadata']['name']}-0"
    pod: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**copy.deepcopy(template["metadata"]), "name": name,
                     "namespace": statefulset["metadata"]["namespace"]},
        "spec": {
            **copy.deepcopy(template["spec"]),
            "volumes": [{"name": claim["metadata"]["name"], "persistentVolumeClaim":
                         {"claimName": f"{claim['metadata']['name']}-{name}"}}],
        },
    }  # fmt: skip
    admitted = apply(pod, plan(pod, defaults).patch)
    validate(admitted)
    assert admitted["spec"]["securityContext"] == pod_spec["securityContext"]

    labels = template["metadata"]["labels"]
    budget = find(objects, "PodDisruptionBudget", "fraud-model")
    assert selects(budget["spec"]["selector"], labels)
    assert budget["spec"]["maxUnavailable"] == 1
    governing = find(objects, "Service", statefulset["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def _mounted_from(pod: Obj, container: Obj, path: str) -> Obj:
    """The volume mounted at the directory holding path in container."""
    directory = path.rpartition("/")[0]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    assert mount.get("readOnly") is True, mount
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


@needs_kustomize
def test_production_has_tls_on_every_hop() -> None:
    """Production: every gRPC service serves a cert-manager certificate (issued by a CA
    Issuer, naming the Service) from its mounted Secret; every client is given the CA:
    the injector's default registry and review CA ConfigMaps, the monitor's registry
    CA, NATS over tls://."""
    objects = build("overlays/production")
    certificates = {c["spec"]["secretName"]: c for c in of_kind(objects, "Certificate")}
    for name, prefix in GRPC_SERVERS.items():
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container)
        for part, key in (("CERT", "tls.crt"), ("KEY", "tls.key")):
            path = env[f"{prefix}_{part}"]
            assert path.endswith(f"/{key}")
            secret = _mounted_from(pod, container, path)["secret"]
            certificate = certificates[secret["secretName"]]
            assert key in [item["key"] for item in secret["items"]]
        assert f"{name}.hitl-system.svc" in certificate["spec"]["dnsNames"]
        assert "server auth" in certificate["spec"]["usages"]
        issuer = find(objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
        assert "ca" in issuer["spec"]  # renewals keep the CA the clients trust
    injector = find(objects, "Deployment", "hitl-injector")
    defaults = SidecarDefaults.load(
        env=env_of(injector["spec"]["template"]["spec"]["containers"][0])
    )
    assert defaults.registry_ca_configmap
    assert defaults.review_ca_configmap
    assert defaults.feedback_ca_configmap == defaults.registry_ca_configmap  # hitl-ca
    feedback_host = defaults.feedback.rpartition(":")[0]
    assert feedback_host in certificates["hitl-feedback-tls"]["spec"]["dnsNames"]
    assert defaults.sink.startswith("tls://")
    assert defaults.nats_ca_configmap
    assert defaults.nats_credentials_secret
    monitor_pod = find(objects, "Deployment", "hitl-monitor")["spec"]["template"]["spec"]
    (monitor,) = monitor_pod["containers"]
    monitor_env = env_of(monitor)
    registry_host = monitor_env["HITL_MONITOR_REGISTRY"].rpartition(":")[0]
    assert registry_host in certificates["hitl-registry-tls"]["spec"]["dnsNames"]
    ca = _mounted_from(monitor_pod, monitor, monitor_env["HITL_MONITOR_REGISTRY_CA"])["secret"]
    assert ca["secretName"] == find(objects, "Certificate", "hitl-ca")["spec"]["secretName"]
    assert [item["key"] for item in ca["items"]] == ["ca.crt"]  # never the CA's key


@needs_kustomize
def test_production_probes_grpc_health_on_a_plaintext_port_of_its_own() -> None:
    """Production: the kubelet's gRPC probes cannot speak TLS, so each gRPC service
    serves its health in clear on a port of its own (HITL_*_HEALTH_LISTEN) and every
    probe is the base's gRPC probe moved there, readiness naming the service; no
    Service exposes that port and no NetworkPolicy admits pods to it."""
    objects = build("overlays/production")
    base = build("base")
    for name, prefix in GRPC_SERVERS.items():
        (container,) = find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        (base_container,) = find(base, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        health_port = ports["health"]
        assert health_port not in (ports["grpc"], ports["metrics"])
        health_var = prefix.removesuffix("_TLS") + "_HEALTH_LISTEN"
        assert env_of(container)[health_var] == f"0.0.0.0:{health_port}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert "tcpSocket" not in container[probe], (name, probe)
            expected = {**base_container[probe]["grpc"], "port": health_port}
            assert container[probe]["grpc"] == expected, (name, probe)
        assert container["readinessProbe"]["grpc"]["service"].startswith("hitl.v1.")
        service = find(objects, "Service", name)
        assert health_port not in [p["port"] for p in service["spec"]["ports"]]
        policy = find(objects, "NetworkPolicy", name)
        opened = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
        assert health_port not in opened


@needs_kustomize
def test_single_node_says_it_leaves_tls_out() -> None:
    """Single node: no service serves TLS, and its kustomization says so."""
    objects = build("overlays/single-node")
    for name, prefix in GRPC_SERVERS.items():
        (container,) = find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert f"{prefix}_CERT" not in env_of(container)
    kustomization = (K8S / "overlays/single-node/kustomization.yaml").read_text()
    assert "What it leaves out" in kustomization
    assert "in clear" in kustomization


@needs_kustomize
@pytest.mark.parametrize("overlay", ["overlays/single-node", "overlays/production"])
def test_the_loop_services_read_the_feedback_database(overlay: str) -> None:
    """The feedback service and the monitor open the same database: one claimed SQLite
    file on a single node, the Secret's feedback-url in production; one monitor."""
    objects = build(overlay)
    feedback = find(objects, "Deployment", "hitl-feedback")["spec"]["template"]["spec"]
    monitor_deployment = find(objects, "Deployment", "hitl-monitor")
    monitor = monitor_deployment["spec"]["template"]["spec"]
    assert monitor_deployment["spec"]["replicas"] == 1
    assert monitor_deployment["spec"]["strategy"]["type"] == "Recreate"
    (feedback_env,) = [c["env"] for c in feedback["containers"]]
    (monitor_env,) = [c["env"] for c in monitor["containers"]]
    feedback_db = next(e for e in feedback_env if e["name"] == "HITL_FEEDBACK_DB")
    monitor_db = next(e for e in monitor_env if e["name"] == "HITL_MONITOR_DB")
    assert {k: v for k, v in feedback_db.items() if k != "name"} == {
        k: v for k, v in monitor_db.items() if k != "name"
    }
    if overlay == "overlays/single-node":
        claims = [
            {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"]["claimName"]
            for pod in (feedback, monitor)
        ]
        assert claims == ["hitl-feedback-data", "hitl-feedback-data"]
        assert feedback_db["value"].startswith("sqlite:/var/lib/hitl/")
    else:
        assert feedback_db["valueFrom"]["secretKeyRef"] == {
            "name": "hitl-postgres",
            "key": "feedback-url",
        }
