"""The JSONPatch that injects a pod: what the pod becomes, validated against the
Kubernetes schemas, and what is refused or left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.config import SidecarConfig
from sidecar.injector import annotations as a
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.container import CONTAINER_NAME, ROUTER_SERVICE, SIDECAR_UID
from sidecar.injector.errors import InjectionRefused
from sidecar.injector.patch import DEFAULT_CONTAINER, apply, plan
from sidecar.policy.signing import generate_key_pair
from tests.unit.injector.pods import (
    PLAIN_SCHEMA_VERSIONS,
    apply_patch,
    pod,
    sidecar_of,
    validate,
    volumes_of,
)

DEFAULTS = SidecarDefaults(
    image="ghcr.io/hitl-sidecar/hitl:0.1.0",
    registry="hitl-registry.hitl-system.svc:7433",
    sink="review://hitl-review.hitl-system.svc:7432",
)


def injected(obj: dict[str, Any], defaults: SidecarDefaults = DEFAULTS) -> dict[str, Any]:
    mutation = plan(obj, defaults)
    assert mutation.patch, mutation.skipped
    result = apply_patch(obj, mutation.patch)
    assert apply(obj, mutation.patch) == result  # the render command's applier agrees
    return result


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_native_sidecar_is_a_restartable_init_container() -> None:
    """By default the sidecar is an init container with restartPolicy Always, and the
    pod validates against the Kubernetes schemas."""
    result = injected(pod())
    validate(result)
    sidecar = result["spec"]["initContainers"][-1]
    assert sidecar["name"] == CONTAINER_NAME
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == DEFAULTS.image
    assert [c["name"] for c in result["spec"]["containers"]] == ["model"]
    assert result["metadata"]["annotations"][a.STATUS] == "injected"
    assert result["metadata"]["annotations"][DEFAULT_CONTAINER] == "model"


def test_plain_container_on_request() -> None:
    """hitl.dev/native-sidecar: "false" makes it a plain container that pauses on stop,
    valid on older clusters too."""
    result = injected(pod({a.MODEL: "fraud", a.NATIVE_SIDECAR: "false"}))
    validate(result, PLAIN_SCHEMA_VERSIONS)
    assert "initContainers" not in result["spec"]
    sidecar = result["spec"]["containers"][-1]
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_injector_wide_plain_mode() -> None:
    """The injector's own flag sets the mode for pods that do not say."""
    plain = SidecarDefaults(image="i", registry="r:1", native=False)
    assert "restartPolicy" not in sidecar_of(injected(pod(), plain))


def test_probes_point_at_the_grpc_health_service() -> None:
    """Startup, liveness and readiness are gRPC probes on the health port; readiness
    asks for the Router service."""
    sidecar = sidecar_of(injected(pod({a.MODEL: "fraud", a.HEALTH_PORT: "17000"})))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert sidecar[probe]["grpc"]["port"] == 17000
    assert sidecar["readinessProbe"]["grpc"]["service"] == ROUTER_SERVICE
    assert "service" not in sidecar["livenessProbe"]["grpc"]


def test_route_on_loopback_health_on_the_pod_network() -> None:
    """The Router listens on 127.0.0.1 only and is no declared port; health alone
    listens on every address."""
    sidecar = sidecar_of(injected(pod({a.MODEL: "fraud", a.PORT: "17431"})))
    env = env_of(sidecar)
    assert env["HITL_LISTEN"] == "127.0.0.1:17431"
    assert env["HITL_HEALTH_LISTEN"] == "0.0.0.0:7434"
    assert env["HITL_METRICS_ADDR"] == "0.0.0.0:9464"
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {"hitl-health": 7434, "hitl-metrics": 9464}


def test_security_context_is_restrictive() -> None:
    """Non-root, read-only root, no privilege escalation, no capabilities."""
    context = sidecar_of(injected(pod()))["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == SIDECAR_UID
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_registry_mode_mounts_token_and_public_key() -> None:
    """From a registry: the token Secret and the key ConfigMap are mounted read-only and
    named in the environment; state goes on a sized emptyDir."""
    result = injected(pod())
    sidecar = sidecar_of(result)
    env = env_of(sidecar)
    assert env["HITL_REGISTRY"] == "hitl-registry.hitl-system.svc:7433"
    token_file = "/var/run/secrets/hitl/registry/token"  # noqa: S105 - a path
    assert env["HITL_REGISTRY_TOKEN_FILE"] == token_file
    assert env["HITL_REGISTRY_PUBLIC_KEY"] == "/etc/hitl/registry/public-key.pem"
    assert "HITL_POLICY" not in env
    assert env["HITL_SINK"] == DEFAULTS.sink
    assert env["HITL_DEPLOYMENT"] == "fraud"
    assert env["HITL_AUDIT_LOG"] == "-"
    volumes = volumes_of(result)
    assert volumes["hitl-registry-token"]["secret"]["secretName"] == "hitl-registry-token"
    assert volumes["hitl-registry-public-key"]["configMap"]["name"] == "hitl-registry-public-key"
    assert volumes["hitl-state"]["emptyDir"] == {"sizeLimit": "1Gi"}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts["/var/lib/hitl"]["name"] == "hitl-state"
    assert env["HITL_STATE_DIR"] == "/var/lib/hitl"
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/var/lib/hitl")


def test_registry_over_tls_mounts_its_ca() -> None:
    """hitl.dev/registry-ca (or the injector's default) mounts the CA and sets
    HITL_REGISTRY_CA, so the sidecar speaks TLS to the registry; without it, nothing."""
    result = injected(pod({a.MODEL: "fraud", a.REGISTRY_CA: "registry-ca"}))
    validate(result)
    sidecar = sidecar_of(result)
    assert env_of(sidecar)["HITL_REGISTRY_CA"] == "/etc/hitl/registry-ca/ca.crt"
    volumes = volumes_of(result)
    assert volumes["hitl-registry-ca"]["configMap"]["name"] == "registry-ca"
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts["/etc/hitl/registry-ca"] == {
        "name": "hitl-registry-ca",
        "mountPath": "/etc/hitl/registry-ca",
        "readOnly": True,
    }
    with_default = SidecarDefaults(image="i", registry="r:1", registry_ca_configmap="cluster-ca")
    assert env_of(sidecar_of(injected(pod(), with_default)))["HITL_REGISTRY_CA"]
    opted_out = injected(pod({a.MODEL: "fraud", a.REGISTRY_CA: ""}), with_default)
    assert "HITL_REGISTRY_CA" not in env_of(sidecar_of(opted_out))
    assert "HITL_REGISTRY_CA" not in env_of(sidecar_of(injected(pod())))


def test_the_sidecar_accepts_the_injected_registry_environment(tmp_path: Path) -> None:
    """The environment injected for registry mode (with TLS) and a review:// sink is
    one the sidecar's own config loader accepts once the Secrets and ConfigMaps are
    mounted."""
    annotations = {a.MODEL: "fraud", a.REGISTRY_CA: "registry-ca", a.REVIEW_CA: "review-ca"}
    sidecar = sidecar_of(injected(pod(annotations)))
    mounted = {mount["mountPath"]: tmp_path / mount["name"] for mount in sidecar["volumeMounts"]}
    for directory in mounted.values():
        directory.mkdir()
    generate_key_pair(tmp_path / "signing.key", mounted["/etc/hitl/registry"] / "public-key.pem")
    (mounted["/var/run/secrets/hitl/registry"] / "token").write_text("t0ken\n")
    (mounted["/var/run/secrets/hitl/review"] / "token").write_text("r3view\n")
    (mounted["/etc/hitl/review-ca"] / "ca.crt").write_text("PEM")
    (mounted["/etc/hitl/registry-ca"] / "ca.crt").write_text("PEM")

    def local(value: str) -> str:
        for path, directory in mounted.items():
            if value.startswith(path + "/"):
                return str(directory) + value[len(path) :]
        return value

    env = {e["name"]: local(e["value"]) for e in sidecar["env"] if "value" in e}
    config = SidecarConfig.load(env=env)
    assert config.registry == "hitl-registry.hitl-system.svc:7433"
    assert config.listen == "127.0.0.1:7431"
    assert config.health_listen == "0.0.0.0:7434"
    assert config.spool_budget_bytes == int(2**30 * 0.9)
    assert config.deployment == "fraud"
    assert config.sink.startswith("review://")
    assert config.review_token == "r3view"  # noqa: S105 (a test token)
    assert config.review_ca == mounted["/etc/hitl/review-ca"] / "ca.crt"


def test_policy_configmap_mode() -> None:
    """From a ConfigMap: it is mounted and HITL_POLICY names policy.yaml in it."""
    result = injected(pod({a.MODEL: "fraud", a.POLICY: "fraud-policy"}))
    validate(result)
    env = env_of(sidecar_of(result))
    assert env["HITL_POLICY"] == "/etc/hitl/policy/policy.yaml"
    assert "HITL_REGISTRY" not in env
    volumes = volumes_of(result)
    assert volumes["hitl-policy"] == {"name": "hitl-policy", "configMap": {"name": "fraud-policy"}}


def test_resources_and_spool_budget_follow_annotations() -> None:
    """Resources are set as annotated; the spool budget is 90 % of the state volume,
    whose size the sidecar requests as ephemeral storage."""
    result = injected(
        pod({a.MODEL: "fraud", a.CPU_LIMIT: "2", a.MEMORY_LIMIT: "1Gi", a.STATE_SIZE: "2Gi"})
    )
    validate(result)
    sidecar = sidecar_of(result)
    assert sidecar["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "2Gi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    assert env_of(sidecar)["HITL_SPOOL_BUDGET_BYTES"] == str(int(2 * 2**30 * 0.9))
    assert {"name": "hitl-state", "emptyDir": {"sizeLimit": "2Gi"}} in result["spec"]["volumes"]


def test_state_on_a_volume_of_the_pod() -> None:
    """hitl.dev/state-volume mounts the pod's own volume (a StatefulSet claim) instead."""
    claim = {"name": "spool", "persistentVolumeClaim": {"claimName": "spool-fraud-0"}}
    result = injected(pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool"}, volumes=[claim]))
    validate(result)
    assert "hitl-state" not in {v["name"] for v in result["spec"]["volumes"]}
    sidecar = sidecar_of(result)
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    assert mounts["/var/lib/hitl"] == "spool"
    assert "ephemeral-storage" not in sidecar["resources"]["requests"]  # the claim is not
    with pytest.raises(InjectionRefused, match="no volume named 'spool'"):
        plan(pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool"}), DEFAULTS)


CLAIM = {"name": "spool", "persistentVolumeClaim": {"claimName": "spool-fraud-0"}}


def test_a_claim_volume_gets_the_sidecars_fs_group() -> None:
    """With state on a volume of the pod, the pod gets the sidecar's group as fsGroup
    (changed once, on a root mismatch), so a fresh claim is writable by the sidecar."""
    result = injected(pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool"}, volumes=[CLAIM]))
    assert result["spec"]["securityContext"] == {
        "fsGroup": SIDECAR_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    context = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    result = injected(
        pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool"}, volumes=[CLAIM], securityContext=context)
    )
    validate(result)
    assert result["spec"]["securityContext"] == {
        **context,
        "fsGroup": SIDECAR_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
    }


def test_the_pods_own_fs_group_is_never_overridden() -> None:
    """A pod that sets fsGroup keeps it, and its change policy (the kubelet gives every
    container the fsGroup as a supplementary group, so the sidecar can write)."""
    context = {"fsGroup": 3000, "fsGroupChangePolicy": "Always"}
    result = injected(
        pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool"}, volumes=[CLAIM], securityContext=context)
    )
    assert result["spec"]["securityContext"] == context
    mutation = plan(pod(securityContext={"runAsUser": 1}), DEFAULTS)  # an emptyDir: untouched
    assert not any("securityContext" in op["path"] for op in mutation.patch)


def test_a_statefulset_claim_template_is_a_state_volume() -> None:
    """A StatefulSet's pod template may name one of its volumeClaimTemplates, which the
    controller will add to each pod; a state size beyond the claim is refused."""
    template = pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool", a.STATE_SIZE: "2Gi"})
    result = apply_patch(template, plan(template, DEFAULTS, {"spool": "2Gi"}).patch)
    mounts = {m["mountPath"]: m["name"] for m in sidecar_of(result)["volumeMounts"]}
    assert mounts["/var/lib/hitl"] == "spool"
    assert "spool" not in {v["name"] for v in result["spec"]["volumes"]}
    assert plan(template, DEFAULTS, {"spool": ""}).patch  # no size requested: not checked
    with pytest.raises(InjectionRefused) as caught:
        plan(template, DEFAULTS, {"spool": "1Gi"})
    assert str(caught.value).startswith(
        "hitl.dev/state-size (2Gi) is more than the volumeClaimTemplate 'spool' requests (1Gi)"
    )
    with pytest.raises(InjectionRefused, match="no volume or volumeClaimTemplate named 'spool'"):
        plan(template, DEFAULTS, {"data": "5Gi"})


def test_a_read_only_state_volume_is_refused() -> None:
    """A ConfigMap (or Secret, projected, downward API) volume cannot hold the spool."""
    volume = {"name": "spool", "configMap": {"name": "x"}}
    with pytest.raises(InjectionRefused, match="volume 'spool' is a configMap volume"):
        plan(pod({a.MODEL: "fraud", a.STATE_VOLUME: "spool"}, volumes=[volume]), DEFAULTS)


def test_the_drain_time_becomes_the_sidecars_grace_setting() -> None:
    """hitl.dev/drain-seconds is HITL_SHUTDOWN_GRACE_SECONDS, when it fits in the grace
    period with the preStop pause of a plain container."""
    native = injected(pod({a.MODEL: "fraud", a.DRAIN_SECONDS: "30"}))
    assert env_of(sidecar_of(native))["HITL_SHUTDOWN_GRACE_SECONDS"] == "30"
    plain = pod({a.MODEL: "fraud", a.DRAIN_SECONDS: "40", a.NATIVE_SIDECAR: "false"},
                terminationGracePeriodSeconds=45)  # fmt: skip
    assert env_of(sidecar_of(injected(plain)))["HITL_SHUTDOWN_GRACE_SECONDS"] == "40"


@pytest.mark.parametrize(
    ("annotations", "grace", "expected"),
    [
        (
            {a.DRAIN_SECONDS: "31"},
            None,
            "hitl.dev/drain-seconds (31 s) does not fit in the pod's "
            "terminationGracePeriodSeconds (30 s, the default): set "
            "terminationGracePeriodSeconds to at least 31 plus the time the model server "
            "takes to stop, or lower hitl.dev/drain-seconds",
        ),
        (
            {a.DRAIN_SECONDS: "41", a.NATIVE_SIDECAR: "false"},
            45,
            "hitl.dev/drain-seconds (41 s) plus the sidecar's 5 s preStop pause does not fit "
            "in the pod's terminationGracePeriodSeconds (45 s): set "
            "terminationGracePeriodSeconds to at least 46",
        ),
    ],
)
def test_a_drain_time_beyond_the_grace_period_is_refused(
    annotations: dict[str, str], grace: int | None, expected: str
) -> None:
    """The pod would be killed mid-drain: refused, naming the annotation and the fix."""
    spec: dict[str, Any] = {} if grace is None else {"terminationGracePeriodSeconds": grace}
    with pytest.raises(InjectionRefused) as caught:
        plan(pod({a.MODEL: "fraud", **annotations}, **spec), DEFAULTS)
    assert str(caught.value).startswith(expected)


@pytest.mark.parametrize(
    ("grace", "native", "drain"),
    [(None, "true", "10"), (45, "true", "10"), (8, "true", "8"), (8, "false", "3"),
     (3, "false", "1"), (0, "true", "1")],
)  # fmt: skip
def test_without_the_annotation_the_default_drain_is_fitted(
    grace: int | None, native: str, drain: str
) -> None:
    """No annotation: 10 s, shortened to what the grace period leaves (at least 1 s);
    such a pod is never refused."""
    spec: dict[str, Any] = {} if grace is None else {"terminationGracePeriodSeconds": grace}
    result = injected(pod({a.MODEL: "fraud", a.NATIVE_SIDECAR: native}, **spec))
    assert env_of(sidecar_of(result))["HITL_SHUTDOWN_GRACE_SECONDS"] == drain


def test_existing_init_containers_volumes_and_annotations_are_kept() -> None:
    """The patch appends: the pod's own init containers run first, its volumes and
    annotations stay, and a default-container annotation it set is not replaced."""
    original = pod(
        {a.MODEL: "fraud", DEFAULT_CONTAINER: "model", "team": "risk"},
        initContainers=[{"name": "fetch-model", "image": "busybox:1.36"}],
        volumes=[{"name": "weights", "emptyDir": {}}],
    )
    result = injected(original)
    validate(result)
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["fetch-model", CONTAINER_NAME]
    assert result["spec"]["volumes"][0] == {"name": "weights", "emptyDir": {}}
    assert result["metadata"]["annotations"]["team"] == "risk"
    patch_paths = [op["path"] for op in plan(original, DEFAULTS).patch]
    assert "/metadata/annotations/kubectl.kubernetes.io~1default-container" not in patch_paths
    assert "/metadata/annotations/hitl.dev~1status" in patch_paths


def test_a_pod_without_annotations_object() -> None:
    """A pod with no annotations map at all is refused (no model), not crashed on."""
    bare = pod()
    del bare["metadata"]["annotations"]
    with pytest.raises(InjectionRefused, match=r"hitl\.dev/model is required"):
        plan(bare, DEFAULTS)


def test_idempotent() -> None:
    """An injected pod is left alone: injecting twice changes nothing."""
    once = injected(pod())
    again = plan(once, DEFAULTS)
    assert again.patch == []
    assert "already injected" in again.skipped


def test_pods_that_do_not_opt_in_are_left_alone() -> None:
    """No label, or a label other than "true": no patch."""
    assert plan(pod(labels={}), DEFAULTS).patch == []
    assert plan(pod(labels={a.INJECT: "false"}), DEFAULTS).patch == []


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod(hostNetwork=True), "host network"),
        (
            pod(containers=[{"name": "m", "image": "m", "ports": [{"containerPort": 7431}]}]),
            "hitl.dev/port: port 7431 is already used by container 'm'",
        ),
        (
            pod(containers=[{"name": "m", "image": "m", "ports": [{"containerPort": 7434}]}]),
            "hitl.dev/health-port: port 7434 is already used by container 'm'",
        ),
        (
            pod(containers=[{"name": "m", "image": "m", "ports": [{"containerPort": 9464}]}]),
            "hitl.dev/metrics-port: port 9464 is already used",
        ),
        (pod(volumes=[{"name": "hitl-state", "emptyDir": {}}]), "volume named 'hitl-state'"),
        (pod({a.MODEL: "fraud", a.PORT: "1"}), "hitl.dev/port must be a port number"),
    ],
)
def test_pods_that_cannot_be_injected_are_refused(obj: dict[str, Any], expected: str) -> None:
    """Conflicts with the pod's own ports, volumes or network are refused by name."""
    with pytest.raises(InjectionRefused) as caught:
        plan(obj, DEFAULTS)
    assert expected in str(caught.value)
