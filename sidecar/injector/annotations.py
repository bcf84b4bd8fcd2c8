"""What a pod asks of the injector: the opt-in label and the ``hitl.dev/*``
annotations, read into one PodSettings or refused with a message naming the
annotation, the value and what would be accepted. No I/O here.

A pod opts in with the *label* ``hitl.dev/inject: "true"`` (a label, so the webhook's
objectSelector keeps every other pod away from the webhook); the annotations say
how its sidecar is set up. An annotation under ``hitl.dev/`` that the injector does
not know is refused, so a typo (``hitl.dev/modle``) never passes silently."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from sidecar.injector.checks import (
    DNS_LABEL,
    check_address,
    check_feedback,
    check_sink,
    dns_subdomain,
)
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.errors import InjectionRefused
from sidecar.injector.quantity import parse_quantity

BOOLEANS = {"true": True, "false": False}
PREFIX = "hitl.dev/"
INJECT = PREFIX + "inject"  # the opt-in label
STATUS = PREFIX + "status"  # written by the injector: "injected"
MODEL = PREFIX + "model"
REGISTRY = PREFIX + "registry"
REGISTRY_TOKEN_SECRET = PREFIX + "registry-token-secret"
REGISTRY_PUBLIC_KEY = PREFIX + "registry-public-key"
REGISTRY_CA = PREFIX + "registry-ca"
POLICY = PREFIX + "policy"
SINK = PREFIX + "sink"
REVIEW_TOKEN_SECRET = PREFIX + "review-token-secret"
REVIEW_CA = PREFIX + "review-ca"
NATS_CA = PREFIX + "nats-ca"
NATS_CREDENTIALS_SECRET = PREFIX + "nats-credentials-secret"
NATS_TOKEN_SECRET = PREFIX + "nats-token-secret"
FEEDBACK = PREFIX + "feedback"
FEEDBACK_TOKEN_SECRET = PREFIX + "feedback-token-secret"
FEEDBACK_CA = PREFIX + "feedback-ca"
PORT = PREFIX + "port"
HEALTH_PORT = PREFIX + "health-port"
METRICS_PORT = PREFIX + "metrics-port"
NATIVE_SIDECAR = PREFIX + "native-sidecar"
CPU_REQUEST = PREFIX + "cpu-request"
CPU_LIMIT = PREFIX + "cpu-limit"
MEMORY_REQUEST = PREFIX + "memory-request"
MEMORY_LIMIT = PREFIX + "memory-limit"
STATE_SIZE = PREFIX + "state-size"
STATE_VOLUME = PREFIX + "state-volume"
LOG_LEVEL = PREFIX + "log-level"
DRAIN_SECONDS = PREFIX + "drain-seconds"

# What each annotation does, for the refusal that lists them (and docs/kubernetes.md).
KNOWN: dict[str, str] = {
    MODEL: "required: the model deployment's name (a DNS label), HITL_DEPLOYMENT",
    REGISTRY: "HOST:PORT of the registry the policy comes from",
    REGISTRY_TOKEN_SECRET: "Secret (key 'token') with the sidecar's registry bearer token",
    REGISTRY_PUBLIC_KEY: "ConfigMap (key 'public-key.pem') with the registry's Ed25519 key",
    REGISTRY_CA: "ConfigMap (key 'ca.crt') with the CA of the registry's TLS certificate; "
    "empty: plaintext",
    POLICY: "ConfigMap holding policy.yaml (and its calibrators): a policy file, no registry",
    SINK: "review://HOST:PORT, or nats://HOST:PORT[,...] (tls:// for TLS): where escalations go",
    REVIEW_TOKEN_SECRET: "Secret (key 'token') with the sidecar's review queue bearer token, "
    "for a review:// sink",
    REVIEW_CA: "ConfigMap (key 'ca.crt') with the CA of the review queue's TLS certificate, "
    "for a review:// sink; empty: plaintext",
    NATS_CA: "ConfigMap (key 'ca.crt') with the CA of the NATS servers' TLS certificates, "
    "for a nats:// or tls:// sink or feedback (HITL_NATS_CA: TLS on)",
    NATS_CREDENTIALS_SECRET: "Secret (key 'nats.creds') with the sidecar's NATS credentials "
    "(a .creds file or an NKey seed), for a nats:// or tls:// sink or feedback",
    NATS_TOKEN_SECRET: "Secret (key 'token') with the sidecar's NATS auth token, for a "
    "nats:// or tls:// sink or feedback; replaces the default credentials Secret",
    FEEDBACK: "HOST:PORT of the feedback service, or nats://HOST:PORT[,...] (or tls://) to "
    "send through JetStream: where decision records and outcomes go (HITL_FEEDBACK); "
    "empty: none",
    FEEDBACK_TOKEN_SECRET: "Secret (key 'token') with the sidecar's feedback service bearer "
    "token, for a HOST:PORT feedback service",
    FEEDBACK_CA: "ConfigMap (key 'ca.crt') with the CA of the feedback service's TLS "
    "certificate, for a HOST:PORT feedback service; empty: plaintext",
    PORT: "TCP port of the Router, on 127.0.0.1: only the pod's containers reach it (default 7431)",
    HEALTH_PORT: "TCP port of the sidecar's gRPC health on the pod network, where the "
    "kubelet probes it; nothing else is served there (default 7434)",
    METRICS_PORT: "TCP port of the Prometheus scrape endpoint (default 9464)",
    NATIVE_SIDECAR: "true: an init container with restartPolicy Always (Kubernetes 1.29+); "
    "false: a plain container",
    CPU_REQUEST: "CPU request (default 100m)",
    CPU_LIMIT: "CPU limit (default none: throttling shows up as Route latency)",
    MEMORY_REQUEST: "memory request (default 256Mi)",
    MEMORY_LIMIT: "memory limit (default 512Mi)",
    STATE_SIZE: "size of the state volume (default 1Gi); the spools may use 90 % of it "
    "(with a feedback service, 70 % for escalations and 20 % for decision records); "
    "with hitl.dev/state-volume, the size of that volume",
    STATE_VOLUME: "a volume of the pod (for example a StatefulSet's claim) to keep state on "
    "instead of an emptyDir, so undelivered escalations outlive the pod",
    LOG_LEVEL: "debug, info, warning or error (default info)",
    DRAIN_SECONDS: "seconds the sidecar may take to drain on SIGTERM (HITL_SHUTDOWN_GRACE_SECONDS, "
    "1 to 3600); must fit in the pod's terminationGracePeriodSeconds (default: 10, or less "
    "to fit)",
    STATUS: "written by the injector",
}

DEFAULT_PORT = 7431
DEFAULT_HEALTH_PORT = 7434
DEFAULT_METRICS_PORT = 9464
DEFAULT_CPU_REQUEST = "100m"
DEFAULT_MEMORY_REQUEST = "256Mi"
DEFAULT_MEMORY_LIMIT = "512Mi"
DEFAULT_STATE_SIZE = "1Gi"
DEFAULT_DRAIN_SECONDS = 10
MAX_DRAIN_SECONDS = 3600
MIN_STATE_BYTES = 16 * 2**20
# Shares of the state volume; the rest is last-known-good and slack. Escalations are
# refused when their spool is full, decision records only counted, so escalations
# keep the larger share when both spools are on one volume.
SPOOL_SHARE = Decimal("0.9")
SPOOL_SHARE_BESIDE_DECISIONS = Decimal("0.7")
DECISION_SPOOL_SHARE = Decimal("0.2")
LOG_LEVELS = ("debug", "info", "warning", "error")
NATS_SCHEMES = ("nats://", "tls://")


@dataclass(frozen=True, slots=True)
class FromRegistry:
    """The policy comes from the registry at address, authenticated by a token."""

    address: str
    token_secret: str
    public_key_configmap: str
    ca_configmap: str = ""  # empty: plaintext gRPC


@dataclass(frozen=True, slots=True)
class FromConfigMap:
    """The policy is ``policy.yaml`` in a ConfigMap, with the calibrators it names."""

    name: str


@dataclass(frozen=True, slots=True)
class Resources:
    """Quantities as written (checked); an empty string leaves that one unset."""

    cpu_request: str = DEFAULT_CPU_REQUEST
    cpu_limit: str = ""
    memory_request: str = DEFAULT_MEMORY_REQUEST
    memory_limit: str = DEFAULT_MEMORY_LIMIT


@dataclass(frozen=True, slots=True)
class PodSettings:
    """Everything the injector needs to know about one pod's sidecar."""

    model: str
    policy: FromRegistry | FromConfigMap
    sink: str = ""
    review_token_secret: str = ""  # a review:// sink's token, mounted; empty: none
    review_ca_configmap: str = ""  # the review queue's TLS CA, mounted; empty: plaintext
    nats_ca_configmap: str = ""  # the NATS servers' TLS CA, mounted; empty: none
    nats_credentials_secret: str = ""  # a NATS .creds or seed, mounted; empty: none
    nats_token_secret: str = ""  # a NATS token, mounted; empty: none
    feedback: str = ""  # HITL_FEEDBACK; empty: decision records are not sent
    feedback_token_secret: str = ""  # a HOST:PORT feedback's token, mounted; empty: none
    feedback_ca_configmap: str = ""  # the feedback service's TLS CA, mounted; empty: plaintext
    port: int = DEFAULT_PORT
    health_port: int = DEFAULT_HEALTH_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    native: bool = True
    resources: Resources = Resources()
    state_size: str = DEFAULT_STATE_SIZE
    spool_budget_bytes: int = int(parse_quantity(DEFAULT_STATE_SIZE) * SPOOL_SHARE)
    decision_spool_budget_bytes: int = 0  # with a feedback service; 0: none
    state_volume: str = ""
    log_level: str = "info"
    drain_seconds: int = DEFAULT_DRAIN_SECONDS
    drain_annotated: bool = False  # False: the injector fits the default into the grace period


def opted_in(labels: Mapping[str, str]) -> bool:
    return labels.get(INJECT) == "true"


def read_settings(annotations: Mapping[str, str], defaults: SidecarDefaults) -> PodSettings:
    """PodSettings from a pod's annotations over the injector's defaults; raise
    InjectionRefused naming the first annotation that is wrong."""
    unknown = sorted(k for k in annotations if k.startswith(PREFIX) and k not in KNOWN)
    if unknown:
        hint = (
            f" ({INJECT} is a label, not an annotation: move it to metadata.labels)"
            if INJECT in unknown
            else ""
        )
        raise InjectionRefused(
            f"unknown annotation {unknown[0]}{hint}; known: {', '.join(sorted(KNOWN))}"
        )
    get = annotations.get

    model = get(MODEL, "")
    if not model:
        raise InjectionRefused(f"{MODEL} is required: {KNOWN[MODEL].partition(': ')[2]}")
    _dns_label(MODEL, model)

    policy = _policy_source(annotations, defaults)
    sink = get(SINK, defaults.sink)
    if sink:
        check_sink(sink, SINK if SINK in annotations else "the injector's default sink")
    review_token = review_ca = ""
    if sink.startswith("review://"):
        review_token = get(REVIEW_TOKEN_SECRET, defaults.review_token_secret)
        dns_subdomain(REVIEW_TOKEN_SECRET, review_token)
        review_ca = get(REVIEW_CA, defaults.review_ca_configmap)
        if review_ca:
            dns_subdomain(REVIEW_CA, review_ca)
    else:
        for name in (REVIEW_TOKEN_SECRET, REVIEW_CA):
            if name in annotations:
                raise InjectionRefused(f"{name} is for a review:// sink; {SINK} is {sink!r}")
    feedback, feedback_token, feedback_ca = _feedback(annotations, defaults)
    nats_ca, nats_credentials, nats_token = _nats(annotations, defaults, sink, feedback)
    port = _port(PORT, get(PORT), DEFAULT_PORT)
    health_port = _port(HEALTH_PORT, get(HEALTH_PORT), DEFAULT_HEALTH_PORT)
    metrics_port = _port(METRICS_PORT, get(METRICS_PORT), DEFAULT_METRICS_PORT)
    _distinct_ports({PORT: port, HEALTH_PORT: health_port, METRICS_PORT: metrics_port})
    native = _boolean(NATIVE_SIDECAR, get(NATIVE_SIDECAR), defaults.native)
    state_size = get(STATE_SIZE, DEFAULT_STATE_SIZE)
    state_bytes = _quantity(STATE_SIZE, state_size)
    if state_bytes < MIN_STATE_BYTES or state_bytes != int(state_bytes):
        raise InjectionRefused(
            f"{STATE_SIZE} must be a whole number of bytes of at least 16Mi, got {state_size!r}"
        )
    state_volume = get(STATE_VOLUME, "")
    if state_volume:
        _dns_label(STATE_VOLUME, state_volume)
    level = get(LOG_LEVEL, "info")
    if level not in LOG_LEVELS:
        raise InjectionRefused(f"{LOG_LEVEL} must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    drain = get(DRAIN_SECONDS)
    return PodSettings(
        model=model,
        policy=policy,
        sink=sink,
        review_token_secret=review_token,
        review_ca_configmap=review_ca,
        nats_ca_configmap=nats_ca,
        nats_credentials_secret=nats_credentials,
        nats_token_secret=nats_token,
        feedback=feedback,
        feedback_token_secret=feedback_token,
        feedback_ca_configmap=feedback_ca,
        port=port,
        health_port=health_port,
        metrics_port=metrics_port,
        native=native,
        resources=_resources(annotations),
        state_size=state_size,
        spool_budget_bytes=int(
            state_bytes * (SPOOL_SHARE_BESIDE_DECISIONS if feedback else SPOOL_SHARE)
        ),
        decision_spool_budget_bytes=int(state_bytes * DECISION_SPOOL_SHARE) if feedback else 0,
        state_volume=state_volume,
        log_level=level,
        drain_seconds=DEFAULT_DRAIN_SECONDS if drain is None else _drain_seconds(drain),
        drain_annotated=drain is not None,
    )


def _policy_source(
    annotations: Mapping[str, str], defaults: SidecarDefaults
) -> FromRegistry | FromConfigMap:
    configmap = annotations.get(POLICY, "")
    if configmap and REGISTRY in annotations:
        raise InjectionRefused(
            f"{POLICY} and {REGISTRY} both set: a sidecar takes its policy from one of them"
        )
    if configmap:
        dns_subdomain(POLICY, configmap)
        return FromConfigMap(configmap)
    address = annotations.get(REGISTRY, defaults.registry)
    if not address:
        raise InjectionRefused(
            f"no policy source: set {REGISTRY} (HOST:PORT of the registry) or {POLICY} "
            "(a ConfigMap with policy.yaml); this injector has no default registry"
        )
    check_address(REGISTRY if REGISTRY in annotations else "the default registry", address)
    token = annotations.get(REGISTRY_TOKEN_SECRET, defaults.token_secret)
    dns_subdomain(REGISTRY_TOKEN_SECRET, token)
    key = annotations.get(REGISTRY_PUBLIC_KEY, defaults.public_key_configmap)
    dns_subdomain(REGISTRY_PUBLIC_KEY, key)
    ca = annotations.get(REGISTRY_CA, defaults.registry_ca_configmap)
    if ca:
        dns_subdomain(REGISTRY_CA, ca)
    return FromRegistry(address, token, key, ca)


def _feedback(annotations: Mapping[str, str], defaults: SidecarDefaults) -> tuple[str, str, str]:
    """Where decision records go, and for a HOST:PORT feedback service the token
    Secret and CA ConfigMap (empty: plaintext); the last two refused for NATS or none."""
    feedback = annotations.get(FEEDBACK, defaults.feedback)
    if feedback:
        check_feedback(feedback, FEEDBACK if FEEDBACK in annotations else "the default feedback")
    if not feedback or feedback.startswith(NATS_SCHEMES):
        for name in (FEEDBACK_TOKEN_SECRET, FEEDBACK_CA):
            if name in annotations:
                raise InjectionRefused(
                    f"{name} is for a HOST:PORT feedback service; {FEEDBACK} is {feedback!r}"
                )
        return feedback, "", ""
    token = annotations.get(FEEDBACK_TOKEN_SECRET, defaults.feedback_token_secret)
    dns_subdomain(FEEDBACK_TOKEN_SECRET, token)
    ca = annotations.get(FEEDBACK_CA, defaults.feedback_ca_configmap)
    if ca:
        dns_subdomain(FEEDBACK_CA, ca)
    return feedback, token, ca


def _nats(
    annotations: Mapping[str, str], defaults: SidecarDefaults, sink: str, feedback: str
) -> tuple[str, str, str]:
    """The NATS CA ConfigMap, credentials Secret and token Secret of a pod whose sink
    or feedback is NATS: the pod's annotations over the injector's defaults (each may
    be empty; a token Secret replaces the default credentials; not both kinds named);
    refused when neither is NATS."""
    names = (NATS_CA, NATS_CREDENTIALS_SECRET, NATS_TOKEN_SECRET)
    if not (sink.startswith(NATS_SCHEMES) or feedback.startswith(NATS_SCHEMES)):
        for name in names:
            if name in annotations:
                raise InjectionRefused(
                    f"{name} is for a nats:// or tls:// sink or feedback; {SINK} is {sink!r}"
                    f" and {FEEDBACK} is {feedback!r}"
                )
        return "", "", ""
    if annotations.get(NATS_CREDENTIALS_SECRET) and annotations.get(NATS_TOKEN_SECRET):
        raise InjectionRefused(
            f"{NATS_CREDENTIALS_SECRET} and {NATS_TOKEN_SECRET} are two ways to authenticate"
            " to NATS: set one"
        )
    token = annotations.get(NATS_TOKEN_SECRET, "")
    given = (
        annotations.get(NATS_CA, defaults.nats_ca_configmap),
        "" if token else annotations.get(NATS_CREDENTIALS_SECRET, defaults.nats_credentials_secret),
        token,
    )
    for name, value in zip(names, given, strict=True):
        if value:
            dns_subdomain(name, value)
    return given


def _resources(annotations: Mapping[str, str]) -> Resources:
    values = {
        name: annotations.get(name, default)
        for name, default in (
            (CPU_REQUEST, DEFAULT_CPU_REQUEST),
            (CPU_LIMIT, ""),
            (MEMORY_REQUEST, DEFAULT_MEMORY_REQUEST),
            (MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT),
        )
    }
    amounts = {name: _quantity(name, value) for name, value in values.items() if value}
    for request, limit in ((CPU_REQUEST, CPU_LIMIT), (MEMORY_REQUEST, MEMORY_LIMIT)):
        if request in amounts and limit in amounts and amounts[limit] < amounts[request]:
            raise InjectionRefused(
                f"{limit} ({values[limit]}) is below {request} ({values[request]})"
            )
    return Resources(values[CPU_REQUEST], values[CPU_LIMIT], values[MEMORY_REQUEST],
                     values[MEMORY_LIMIT])  # fmt: skip


def _quantity(name: str, value: str) -> Decimal:
    try:
        amount = parse_quantity(value)
    except ValueError as exc:
        raise InjectionRefused(f"{name}: {exc}") from None
    if amount <= 0:
        raise InjectionRefused(f"{name} must be positive, got {value!r}")
    return amount


def _drain_seconds(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_DRAIN_SECONDS:
        raise InjectionRefused(
            f"{DRAIN_SECONDS} must be a whole number of seconds from 1 to {MAX_DRAIN_SECONDS}, "
            f"got {value!r}"
        )
    return int(value)


def _port(name: str, value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1024 <= int(value) <= 65535:
        raise InjectionRefused(
            f"{name} must be a port number from 1024 to 65535 (the sidecar runs without "
            f"privileges), got {value!r}"
        )
    return int(value)


def _distinct_ports(ports: Mapping[str, int]) -> None:
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise InjectionRefused(f"{seen[port]} and {name} must differ, both are {port}")
        seen[port] = name


def _boolean(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    if value not in BOOLEANS:
        raise InjectionRefused(f'{name} must be "true" or "false", got {value!r}')
    return BOOLEANS[value]


def _dns_label(name: str, value: str) -> None:
    if not DNS_LABEL.fullmatch(value):
        raise InjectionRefused(
            f"{name} must be a DNS label (lower-case letters, digits and '-', at most 63, "
            f"starting and ending with a letter or digit), got {value!r}"
        )
