"""The sidecar container and the volumes it needs, as Kubernetes API objects (plain
dicts, ready for a JSONPatch), from one pod's settings. No I/O here.

Why it looks the way it does:

- **Route on loopback, health on the pod network.** The Router has no TLS and no
  authentication: only the pod's own containers may reach it, so it listens on
  ``127.0.0.1:PORT`` (``hitl.dev/port``), where the model server reaches it (the
  containers of a pod share one network namespace). The kubelet's gRPC probes dial
  the pod's IP (a probe has no host field), so health gets a listener of its own
  on ``0.0.0.0:HEALTH_PORT`` (``hitl.dev/health-port``, ``HITL_HEALTH_LISTEN``)
  that serves ``grpc.health.v1`` and reflection and nothing else: another pod
  can learn whether the sidecar is ready, never call Route. Only the health and
  metrics ports are declared as container ports; the Router's is not reachable
  from outside the pod. All three are refused when a container of the pod already
  declares them (loopback or not, they share the pod's port space).
- **Probes**, all on the health port. startup: SERVING within 5 minutes (the first
  policy and its calibrators loaded); in native mode the model server starts only
  after that. liveness: the server as a whole, checked only once started, so a
  registry outage never restarts a sidecar that has a policy. readiness:
  ``hitl.v1.Router``, which turns NOT_SERVING while draining (the health listener
  keeps answering through the drain).
- **State.** The spool, dead letters and last-known-good policy live on an emptyDir
  (kept across container restarts, sized by ``hitl.dev/state-size``; the spool may
  use 90 % of it, or 70 % beside the decision records' spool, which gets 20 %, when
  the sidecar sends to a feedback service; the container requests the volume's size
  as ``ephemeral-storage``, so the scheduler puts the pod on a node with room for
  it) or on a volume the pod names (``hitl.dev/state-volume``, for example a
  StatefulSet's claim, to outlive the pod; the pod then gets the sidecar's group as
  its ``fsGroup`` unless it sets one, so a fresh claim is writable). The audit log
  goes to stdout, where the cluster's log pipeline collects it, so it never fills
  the volume.
- **Credentials and CAs** (registry, review queue, feedback service, NATS) are
  mounted read-only from the Secrets and ConfigMaps the annotations (or the
  injector's defaults) name, one key each; the sidecar reads them at start-up.
- **Shutdown order.** As a native sidecar it is stopped after the model server has
  exited. As a plain container it would get SIGTERM at the same moment, so a preStop
  pause lets the model server stop sending first. Its drain time
  (``HITL_SHUTDOWN_GRACE_SECONDS``) is ``hitl.dev/drain-seconds``, checked against the
  pod's grace period (patch.py).
- **Resources.** A memory limit, no CPU limit by default: CFS throttling would show
  up directly as Route latency.
"""

from __future__ import annotations

from typing import Any

from sidecar.injector.annotations import FromConfigMap, FromRegistry, PodSettings
from sidecar.injector.config import SidecarDefaults

CONTAINER_NAME = "hitl-sidecar"
HEALTH_PORT_NAME = "hitl-health"
METRICS_PORT_NAME = "hitl-metrics"
STATE_VOLUME = "hitl-state"
POLICY_VOLUME = "hitl-policy"
TOKEN_VOLUME = "hitl-registry-token"  # noqa: S105 - a volume name, not a token
PUBLIC_KEY_VOLUME = "hitl-registry-public-key"
CA_VOLUME = "hitl-registry-ca"
REVIEW_TOKEN_VOLUME = "hitl-review-token"  # noqa: S105 - a volume name, not a token
REVIEW_CA_VOLUME = "hitl-review-ca"
NATS_CA_VOLUME = "hitl-nats-ca"
NATS_CREDENTIALS_VOLUME = "hitl-nats-credentials"
FEEDBACK_TOKEN_VOLUME = "hitl-feedback-token"  # noqa: S105 - a volume name, not a token
FEEDBACK_CA_VOLUME = "hitl-feedback-ca"
VOLUME_NAMES = (
    STATE_VOLUME,
    POLICY_VOLUME,
    TOKEN_VOLUME,
    PUBLIC_KEY_VOLUME,
    CA_VOLUME,
    REVIEW_TOKEN_VOLUME,
    REVIEW_CA_VOLUME,
    NATS_CA_VOLUME,
    NATS_CREDENTIALS_VOLUME,
    FEEDBACK_TOKEN_VOLUME,
    FEEDBACK_CA_VOLUME,
)

STATE_DIR = "/var/lib/hitl"
POLICY_DIR = "/etc/hitl/policy"
POLICY_FILE = "policy.yaml"
TOKEN_DIR = "/var/run/secrets/hitl/registry"  # noqa: S105 - where it is mounted
TOKEN_KEY = "token"  # noqa: S105 - the Secret's key name
REVIEW_TOKEN_DIR = "/var/run/secrets/hitl/review"  # noqa: S105 - where it is mounted
REVIEW_CA_DIR = "/etc/hitl/review-ca"
NATS_CA_DIR = "/etc/hitl/nats-ca"
NATS_CREDENTIALS_DIR = "/var/run/secrets/hitl/nats"
NATS_CREDS_KEY = "nats.creds"
FEEDBACK_TOKEN_DIR = "/var/run/secrets/hitl/feedback"  # noqa: S105 - where it is mounted
FEEDBACK_CA_DIR = "/etc/hitl/feedback-ca"
PUBLIC_KEY_DIR = "/etc/hitl/registry"
PUBLIC_KEY_KEY = "public-key.pem"
CA_DIR = "/etc/hitl/registry-ca"
CA_KEY = "ca.crt"

SIDECAR_UID = 10001  # the image's user (Dockerfile); runAsNonRoot needs a number
ROUTER_SERVICE = "hitl.v1.Router"
PRESTOP_PAUSE_SECONDS = 5
STARTUP_SECONDS = 300

JsonObject = dict[str, Any]

# The optional credentials and CAs, each mounted when its pod setting names a Secret
# or ConfigMap: (volume, where it is mounted, the setting, the Secret's key, or None
# for a ConfigMap's CA certificate).
_CREDENTIALS: tuple[tuple[str, str, str, str | None], ...] = (
    (REVIEW_TOKEN_VOLUME, REVIEW_TOKEN_DIR, "review_token_secret", TOKEN_KEY),
    (REVIEW_CA_VOLUME, REVIEW_CA_DIR, "review_ca_configmap", None),
    (NATS_CA_VOLUME, NATS_CA_DIR, "nats_ca_configmap", None),
    (NATS_CREDENTIALS_VOLUME, NATS_CREDENTIALS_DIR, "nats_credentials_secret", NATS_CREDS_KEY),
    (NATS_CREDENTIALS_VOLUME, NATS_CREDENTIALS_DIR, "nats_token_secret", TOKEN_KEY),
    (FEEDBACK_TOKEN_VOLUME, FEEDBACK_TOKEN_DIR, "feedback_token_secret", TOKEN_KEY),
    (FEEDBACK_CA_VOLUME, FEEDBACK_CA_DIR, "feedback_ca_configmap", None),
)


def sidecar_container(settings: PodSettings, defaults: SidecarDefaults) -> JsonObject:
    """The container (an init container with restartPolicy Always when settings.native)."""
    container: JsonObject = {
        "name": CONTAINER_NAME,
        "image": defaults.image,
        "imagePullPolicy": defaults.pull_policy,
        "command": ["hitl", "sidecar"],
        "env": _env(settings),
        "ports": [
            {"name": HEALTH_PORT_NAME, "containerPort": settings.health_port, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": settings.metrics_port, "protocol": "TCP"},
        ],
        "startupProbe": _grpc_probe(
            settings.health_port, "", period=2, failures=STARTUP_SECONDS // 2
        ),
        "livenessProbe": _grpc_probe(settings.health_port, "", period=10, failures=3),
        "readinessProbe": _grpc_probe(settings.health_port, ROUTER_SERVICE, period=5, failures=2),
        "resources": _resources(settings),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": _mounts(settings),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.native:
        container["restartPolicy"] = "Always"
    else:
        container["lifecycle"] = {
            "preStop": {"exec": {"command": ["sleep", str(PRESTOP_PAUSE_SECONDS)]}}
        }
    return container


def sidecar_volumes(settings: PodSettings) -> list[JsonObject]:
    """The volumes the container mounts that the pod does not already have."""
    volumes: list[JsonObject] = []
    if not settings.state_volume:
        volumes.append({"name": STATE_VOLUME, "emptyDir": {"sizeLimit": settings.state_size}})
    for volume, _, setting, key in _CREDENTIALS:
        if source := getattr(settings, setting):
            volumes.append(_ca(volume, source) if key is None else _secret(volume, source, key))
    if isinstance(settings.policy, FromConfigMap):
        volumes.append({"name": POLICY_VOLUME, "configMap": {"name": settings.policy.name}})
    else:
        volumes.append(_secret(TOKEN_VOLUME, settings.policy.token_secret))
        volumes.append(
            {
                "name": PUBLIC_KEY_VOLUME,
                "configMap": {
                    "name": settings.policy.public_key_configmap,
                    "items": [{"key": PUBLIC_KEY_KEY, "path": PUBLIC_KEY_KEY}],
                },
            }
        )
        if settings.policy.ca_configmap:
            volumes.append(_ca(CA_VOLUME, settings.policy.ca_configmap))
    return volumes


def _secret(volume: str, secret: str, key: str = TOKEN_KEY) -> JsonObject:
    """A volume of one key of a Secret (by default the token, key ``token``)."""
    return {
        "name": volume,
        "secret": {"secretName": secret, "items": [{"key": key, "path": key}]},
    }


def _ca(volume: str, configmap: str) -> JsonObject:
    """A volume of a CA certificate in a ConfigMap's key ``ca.crt``."""
    return {
        "name": volume,
        "configMap": {"name": configmap, "items": [{"key": CA_KEY, "path": CA_KEY}]},
    }


def _env(settings: PodSettings) -> list[JsonObject]:
    values = [
        ("HITL_LISTEN", f"127.0.0.1:{settings.port}"),
        ("HITL_HEALTH_LISTEN", f"0.0.0.0:{settings.health_port}"),
        ("HITL_METRICS_ADDR", f"0.0.0.0:{settings.metrics_port}"),
        ("HITL_STATE_DIR", STATE_DIR),
        ("HITL_AUDIT_LOG", "-"),
        ("HITL_DEPLOYMENT", settings.model),
        ("HITL_SPOOL_BUDGET_BYTES", str(settings.spool_budget_bytes)),
        ("HITL_LOG_LEVEL", settings.log_level),
        ("HITL_SHUTDOWN_GRACE_SECONDS", str(settings.drain_seconds)),
    ]
    if settings.sink:
        values.append(("HITL_SINK", settings.sink))
    if settings.review_token_secret:
        values.append(("HITL_REVIEW_TOKEN_FILE", f"{REVIEW_TOKEN_DIR}/{TOKEN_KEY}"))
    if settings.review_ca_configmap:
        values.append(("HITL_REVIEW_CA", f"{REVIEW_CA_DIR}/{CA_KEY}"))
    if settings.nats_ca_configmap:
        values.append(("HITL_NATS_CA", f"{NATS_CA_DIR}/{CA_KEY}"))
    if settings.nats_credentials_secret:
        values.append(("HITL_NATS_CREDS_FILE", f"{NATS_CREDENTIALS_DIR}/{NATS_CREDS_KEY}"))
    if settings.nats_token_secret:
        values.append(("HITL_NATS_TOKEN_FILE", f"{NATS_CREDENTIALS_DIR}/{TOKEN_KEY}"))
    if settings.feedback:
        values.append(("HITL_FEEDBACK", settings.feedback))
        values.append(
            ("HITL_DECISION_SPOOL_BUDGET_BYTES", str(settings.decision_spool_budget_bytes))
        )
    if settings.feedback_token_secret:
        values.append(("HITL_FEEDBACK_TOKEN_FILE", f"{FEEDBACK_TOKEN_DIR}/{TOKEN_KEY}"))
    if settings.feedback_ca_configmap:
        values.append(("HITL_FEEDBACK_CA", f"{FEEDBACK_CA_DIR}/{CA_KEY}"))
    policy = settings.policy
    if isinstance(policy, FromRegistry):
        values += [
            ("HITL_REGISTRY", policy.address),
            ("HITL_REGISTRY_TOKEN_FILE", f"{TOKEN_DIR}/{TOKEN_KEY}"),
            ("HITL_REGISTRY_PUBLIC_KEY", f"{PUBLIC_KEY_DIR}/{PUBLIC_KEY_KEY}"),
        ]
        if policy.ca_configmap:
            values.append(("HITL_REGISTRY_CA", f"{CA_DIR}/{CA_KEY}"))
    else:
        values.append(("HITL_POLICY", f"{POLICY_DIR}/{POLICY_FILE}"))
    env: list[JsonObject] = [{"name": name, "value": value} for name, value in values]
    env += [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)",
        },
    ]
    return env


def _mounts(settings: PodSettings) -> list[JsonObject]:
    mounts: list[JsonObject] = [
        {"name": settings.state_volume or STATE_VOLUME, "mountPath": STATE_DIR}
    ]
    if isinstance(settings.policy, FromConfigMap):
        mounts.append({"name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True})
    else:
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
        mounts.append({"name": PUBLIC_KEY_VOLUME, "mountPath": PUBLIC_KEY_DIR, "readOnly": True})
        if settings.policy.ca_configmap:
            mounts.append({"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True})
    for volume, directory, setting, _ in _CREDENTIALS:
        # The NATS .creds and token share a volume; a pod is given one or the other.
        if getattr(settings, setting):
            mounts.append({"name": volume, "mountPath": directory, "readOnly": True})
    return mounts


def _grpc_probe(port: int, service: str, *, period: int, failures: int) -> JsonObject:
    grpc: JsonObject = {"port": port}
    if service:
        grpc["service"] = service
    return {
        "grpc": grpc,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _resources(settings: PodSettings) -> JsonObject:
    r = settings.resources
    requests = {k: v for k, v in (("cpu", r.cpu_request), ("memory", r.memory_request)) if v}
    if not settings.state_volume:  # the emptyDir counts against the node's ephemeral storage
        requests["ephemeral-storage"] = settings.state_size
    limits = {k: v for k, v in (("cpu", r.cpu_limit), ("memory", r.memory_limit)) if v}
    resources: JsonObject = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources
