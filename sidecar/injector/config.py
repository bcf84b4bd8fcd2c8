"""The injector's settings: what every injected sidecar gets unless its pod's
annotations say otherwise (SidecarDefaults), and how the webhook itself runs
(InjectorConfig). Each setting is declared once (``sidecar.settings.setting``); one
frozen object each, validated at start-up; flags override the environment, and a bad
value fails at start-up naming the variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError
from sidecar.injector import checks
from sidecar.injector.errors import InjectionRefused
from sidecar.settings import (
    Settings,
    address,
    log_level_setting,
    metrics_setting,
    one_of,
    path,
    port_file_setting,
    read,
    seconds_between,
    setting,
)

ENV_SIDECAR_IMAGE = "HITL_INJECTOR_SIDECAR_IMAGE"
ENV_NATIVE_SIDECAR = "HITL_INJECTOR_NATIVE_SIDECAR"
ENV_REGISTRY = "HITL_INJECTOR_REGISTRY"
ENV_TOKEN_SECRET = "HITL_INJECTOR_REGISTRY_TOKEN_SECRET"  # noqa: S105 - a variable name
ENV_PUBLIC_KEY_CONFIGMAP = "HITL_INJECTOR_REGISTRY_PUBLIC_KEY_CONFIGMAP"
ENV_REGISTRY_CA_CONFIGMAP = "HITL_INJECTOR_REGISTRY_CA_CONFIGMAP"
ENV_SINK = "HITL_INJECTOR_SINK"
ENV_REVIEW_TOKEN_SECRET = "HITL_INJECTOR_REVIEW_TOKEN_SECRET"  # noqa: S105 - a variable name
ENV_REVIEW_CA_CONFIGMAP = "HITL_INJECTOR_REVIEW_CA_CONFIGMAP"
ENV_NATS_CA_CONFIGMAP = "HITL_INJECTOR_NATS_CA_CONFIGMAP"
ENV_NATS_CREDENTIALS_SECRET = "HITL_INJECTOR_NATS_CREDENTIALS_SECRET"  # noqa: S105 - a variable name
ENV_FEEDBACK = "HITL_INJECTOR_FEEDBACK"
ENV_FEEDBACK_TOKEN_SECRET = "HITL_INJECTOR_FEEDBACK_TOKEN_SECRET"  # noqa: S105 - a variable name
ENV_FEEDBACK_CA_CONFIGMAP = "HITL_INJECTOR_FEEDBACK_CA_CONFIGMAP"
ENV_INJECTOR_LISTEN = "HITL_INJECTOR_LISTEN"
ENV_INJECTOR_METRICS_ADDR = "HITL_INJECTOR_METRICS_ADDR"

DEFAULT_INJECTOR_LISTEN = "0.0.0.0:8443"
DEFAULT_TLS_DIR = Path("/etc/hitl/injector-tls")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _image(value: str, var: str) -> str:
    if any(c.isspace() for c in value):
        raise ConfigError(f"{var} must be an image reference, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SidecarDefaults(Settings):
    """What an injected sidecar gets when its pod's annotations do not say.

    Addresses, the sink and Kubernetes object names are checked with the same rules
    as the annotations that override them (annotations.py)."""

    image: str = setting(ENV_SIDECAR_IMAGE, help="the sidecar image to inject", parse=_image)
    pull_policy: str = setting(
        "HITL_INJECTOR_IMAGE_PULL_POLICY",
        "IfNotPresent",
        "the injected container's imagePullPolicy: Always, IfNotPresent or Never",
        parse=one_of(*PULL_POLICIES),
    )
    native: bool = setting(
        ENV_NATIVE_SIDECAR,
        True,
        "true: an init container with restartPolicy Always (Kubernetes 1.29+);"
        " false: a plain container",
        flag="native-sidecar",
    )
    registry: str = setting(
        ENV_REGISTRY, "", "the registry HOST:PORT for pods that do not name one"
    )
    token_secret: str = setting(
        ENV_TOKEN_SECRET,
        "hitl-registry-token",
        "default Secret (key token) holding the sidecar's registry bearer token",
    )
    public_key_configmap: str = setting(
        ENV_PUBLIC_KEY_CONFIGMAP,
        "hitl-registry-public-key",
        "default ConfigMap (key public-key.pem) with the registry's public key",
    )
    registry_ca_configmap: str = setting(
        ENV_REGISTRY_CA_CONFIGMAP,
        "",
        "default ConfigMap (key ca.crt) with the registry's TLS CA; empty: plaintext gRPC",
    )
    sink: str = setting(ENV_SINK, "", "the escalation sink for pods that do not name one")
    review_token_secret: str = setting(
        ENV_REVIEW_TOKEN_SECRET,
        "hitl-review-token",
        "default Secret (key token) holding the sidecar's review queue bearer token,"
        " mounted for a review:// sink",
    )
    review_ca_configmap: str = setting(
        ENV_REVIEW_CA_CONFIGMAP,
        "",
        "default ConfigMap (key ca.crt) with the review queue's TLS CA, for a review:// sink;"
        " empty: plaintext gRPC",
    )
    nats_ca_configmap: str = setting(
        ENV_NATS_CA_CONFIGMAP,
        "",
        "default ConfigMap (key ca.crt) with the NATS servers' TLS CA, for a nats:// or"
        " tls:// sink or feedback",
    )
    nats_credentials_secret: str = setting(
        ENV_NATS_CREDENTIALS_SECRET,
        "",
        "default Secret (key nats.creds) with the sidecar's NATS credentials",
    )
    feedback: str = setting(
        ENV_FEEDBACK,
        "",
        "the feedback service (HOST:PORT, or nats:// or tls://HOST:PORT[,...]) for pods"
        " that do not name one; empty: decision records are not sent",
    )
    feedback_token_secret: str = setting(
        ENV_FEEDBACK_TOKEN_SECRET,
        "hitl-feedback-token",
        "default Secret (key token) holding the sidecar's feedback service bearer token,"
        " mounted for a HOST:PORT feedback service",
    )
    feedback_ca_configmap: str = setting(
        ENV_FEEDBACK_CA_CONFIGMAP,
        "",
        "default ConfigMap (key ca.crt) with the feedback service's TLS CA, for a HOST:PORT"
        " feedback service; empty: plaintext gRPC",
    )

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        _check(values)


@dataclass(frozen=True, slots=True)
class InjectorConfig:
    """Settings of one webhook process (docs/configuration.md)."""

    sidecar: SidecarDefaults
    listen: str = setting(ENV_INJECTOR_LISTEN, DEFAULT_INJECTOR_LISTEN, "HOST:PORT", parse=address)
    tls_cert: Path = setting(
        "HITL_INJECTOR_TLS_CERT",
        DEFAULT_TLS_DIR / "tls.crt",
        "the serving certificate (PEM)",
        parse=path,
    )
    tls_key: Path = setting(
        "HITL_INJECTOR_TLS_KEY", DEFAULT_TLS_DIR / "tls.key", "its private key (PEM)", parse=path
    )
    metrics_addr: str = metrics_setting(ENV_INJECTOR_METRICS_ADDR)
    log_level: str = log_level_setting()
    port_file: Path | None = port_file_setting("HITL_INJECTOR_PORT_FILE")
    drain_seconds: float = setting(
        "HITL_INJECTOR_DRAIN_SECONDS",
        3.0,
        "how long /readyz reports 503 before the server stops on SIGTERM (0 to 60)",
        parse=seconds_between(0, 60),
    )
    # How long a client may keep an idle connection open.
    idle_timeout_seconds: float = 60.0

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> InjectorConfig:
        return cls(sidecar=SidecarDefaults.load(overrides, env), **read(cls, overrides, env))


def _check(values: Mapping[str, Any]) -> None:
    """The injector's own defaults obey the annotations' rules (a ConfigError at start-up)."""
    try:
        if values["registry"]:
            checks.check_address(ENV_REGISTRY, values["registry"])
        if values["sink"]:
            checks.check_sink(values["sink"], ENV_SINK)
        if values["feedback"]:
            checks.check_feedback(values["feedback"], ENV_FEEDBACK)
        for var, name in (
            (ENV_TOKEN_SECRET, values["token_secret"]),
            (ENV_PUBLIC_KEY_CONFIGMAP, values["public_key_configmap"]),
            (ENV_REVIEW_TOKEN_SECRET, values["review_token_secret"]),
            (ENV_FEEDBACK_TOKEN_SECRET, values["feedback_token_secret"]),
        ):
            checks.dns_subdomain(var, name)
        for var, name in (  # empty: none
            (ENV_REGISTRY_CA_CONFIGMAP, values["registry_ca_configmap"]),
            (ENV_REVIEW_CA_CONFIGMAP, values["review_ca_configmap"]),
            (ENV_NATS_CA_CONFIGMAP, values["nats_ca_configmap"]),
            (ENV_NATS_CREDENTIALS_SECRET, values["nats_credentials_secret"]),
            (ENV_FEEDBACK_CA_CONFIGMAP, values["feedback_ca_configmap"]),
        ):
            if name:
                checks.dns_subdomain(var, name)
    except InjectionRefused as exc:
        raise ConfigError(str(exc)) from exc
