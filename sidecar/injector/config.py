"""The injector's settings: what every injected sidecar gets unless its pod's
annotations say otherwise (SidecarDefaults), and how the webhook itself runs
(InjectorConfig). One frozen object each, validated at start-up; every environment
variable is a constant here, flags override the environment, and a bad value fails
at start-up naming the variable."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.injector import checks
from sidecar.injector.errors import InjectionRefused
from sidecar.settings import ENV_LOG_LEVEL, check_address, check_log_level

ENV_SIDECAR_IMAGE = "HITL_INJECTOR_SIDECAR_IMAGE"
ENV_PULL_POLICY = "HITL_INJECTOR_IMAGE_PULL_POLICY"
ENV_NATIVE_SIDECAR = "HITL_INJECTOR_NATIVE_SIDECAR"
ENV_REGISTRY = "HITL_INJECTOR_REGISTRY"
ENV_TOKEN_SECRET = "HITL_INJECTOR_REGISTRY_TOKEN_SECRET"  # noqa: S105 - a variable name
ENV_PUBLIC_KEY_CONFIGMAP = "HITL_INJECTOR_REGISTRY_PUBLIC_KEY_CONFIGMAP"
ENV_REGISTRY_CA_CONFIGMAP = "HITL_INJECTOR_REGISTRY_CA_CONFIGMAP"
ENV_SINK = "HITL_INJECTOR_SINK"
ENV_INJECTOR_LISTEN = "HITL_INJECTOR_LISTEN"
ENV_TLS_CERT = "HITL_INJECTOR_TLS_CERT"
ENV_TLS_KEY = "HITL_INJECTOR_TLS_KEY"
ENV_INJECTOR_METRICS_ADDR = "HITL_INJECTOR_METRICS_ADDR"
ENV_INJECTOR_PORT_FILE = "HITL_INJECTOR_PORT_FILE"
ENV_DRAIN = "HITL_INJECTOR_DRAIN_SECONDS"

DEFAULT_INJECTOR_LISTEN = "0.0.0.0:8443"
DEFAULT_TLS_DIR = Path("/etc/hitl/injector-tls")
DEFAULT_TOKEN_SECRET = "hitl-registry-token"  # noqa: S105 - a Secret's name
DEFAULT_PUBLIC_KEY_CONFIGMAP = "hitl-registry-public-key"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class SidecarDefaults:
    """What an injected sidecar gets when its pod's annotations do not say.

    registry and sink are checked where they are used (annotations.py), with the
    same rules as the annotations that override them."""

    image: str
    pull_policy: str = "IfNotPresent"
    native: bool = True
    registry: str = ""
    token_secret: str = DEFAULT_TOKEN_SECRET
    public_key_configmap: str = DEFAULT_PUBLIC_KEY_CONFIGMAP
    registry_ca_configmap: str = ""  # empty: plaintext gRPC to the registry
    sink: str = ""

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> SidecarDefaults:
        """Defaults from env (default: os.environ), with overrides (not None) on top."""
        text = _reader(overrides, env)
        image = text("image", ENV_SIDECAR_IMAGE, "")
        if not image or any(c.isspace() for c in image):
            raise ConfigError(
                f"{ENV_SIDECAR_IMAGE} (or --image) is required: the sidecar image to inject, "
                f"got {image!r}"
            )
        pull = text("pull_policy", ENV_PULL_POLICY, "IfNotPresent")
        if pull not in PULL_POLICIES:
            raise ConfigError(
                f"{ENV_PULL_POLICY} must be one of {list(PULL_POLICIES)}, got {pull!r}"
            )
        native = text("native", ENV_NATIVE_SIDECAR, "true").lower()
        if native not in BOOLEANS:
            raise ConfigError(f"{ENV_NATIVE_SIDECAR} must be true or false, got {native!r}")
        defaults = cls(
            image=image,
            pull_policy=pull,
            native=BOOLEANS[native],
            registry=text("registry", ENV_REGISTRY, ""),
            token_secret=text("token_secret", ENV_TOKEN_SECRET, DEFAULT_TOKEN_SECRET),
            public_key_configmap=text(
                "public_key_configmap", ENV_PUBLIC_KEY_CONFIGMAP, DEFAULT_PUBLIC_KEY_CONFIGMAP
            ),
            registry_ca_configmap=text("registry_ca_configmap", ENV_REGISTRY_CA_CONFIGMAP, ""),
            sink=text("sink", ENV_SINK, ""),
        )
        _check(defaults)
        return defaults


@dataclass(frozen=True, slots=True)
class InjectorConfig:
    """Settings of one webhook process (docs/kubernetes.md)."""

    sidecar: SidecarDefaults
    listen: str = DEFAULT_INJECTOR_LISTEN
    tls_cert: Path = DEFAULT_TLS_DIR / "tls.crt"
    tls_key: Path = DEFAULT_TLS_DIR / "tls.key"
    metrics_addr: str = ""
    log_level: str = "info"
    port_file: Path | None = None
    drain_seconds: float = 3.0
    # How long a client may take over the TLS handshake, and keep an idle connection.
    handshake_timeout_seconds: float = 5.0
    idle_timeout_seconds: float = 60.0

    @classmethod
    def load(
        cls, overrides: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
    ) -> InjectorConfig:
        text = _reader(overrides, env)
        listen = text("listen", ENV_INJECTOR_LISTEN, DEFAULT_INJECTOR_LISTEN)
        check_address(listen, ENV_INJECTOR_LISTEN)
        metrics_addr = text("metrics_addr", ENV_INJECTOR_METRICS_ADDR, "")
        if metrics_addr:
            check_address(metrics_addr, ENV_INJECTOR_METRICS_ADDR)
        level = text("log_level", ENV_LOG_LEVEL, "info").lower()
        check_log_level(level)
        port_file = text("port_file", ENV_INJECTOR_PORT_FILE, "")
        drain = text("drain_seconds", ENV_DRAIN, "3")
        try:
            drain_seconds = float(drain)
        except ValueError:
            raise ConfigError(f"{ENV_DRAIN} must be a number, got {drain!r}") from None
        if not 0 <= drain_seconds <= 60:
            raise ConfigError(f"{ENV_DRAIN} must be between 0 and 60, got {drain!r}")
        return cls(
            sidecar=SidecarDefaults.load(overrides, env),
            listen=listen,
            tls_cert=Path(text("tls_cert", ENV_TLS_CERT, str(DEFAULT_TLS_DIR / "tls.crt"))),
            tls_key=Path(text("tls_key", ENV_TLS_KEY, str(DEFAULT_TLS_DIR / "tls.key"))),
            metrics_addr=metrics_addr,
            log_level=level,
            port_file=Path(port_file) if port_file else None,
            drain_seconds=drain_seconds,
        )


def _reader(
    overrides: Mapping[str, object] | None, env: Mapping[str, str] | None
) -> Callable[[str, str, str], str]:
    """text(name, var, default): the override called name, else env var, else default."""
    environ = os.environ if env is None else env
    given = {k: v for k, v in (overrides or {}).items() if v is not None}

    def text(name: str, var: str, default: str) -> str:
        return str(given.get(name, environ.get(var, default)))

    return text


def _check(defaults: SidecarDefaults) -> None:
    """The injector's own defaults obey the annotations' rules (a ConfigError at start-up)."""
    try:
        if defaults.registry:
            checks.check_address(ENV_REGISTRY, defaults.registry)
        if defaults.sink:
            checks.check_sink(defaults.sink, ENV_SINK)
        checks.dns_subdomain(ENV_TOKEN_SECRET, defaults.token_secret)
        checks.dns_subdomain(ENV_PUBLIC_KEY_CONFIGMAP, defaults.public_key_configmap)
        if defaults.registry_ca_configmap:
            checks.dns_subdomain(ENV_REGISTRY_CA_CONFIGMAP, defaults.registry_ca_configmap)
    except InjectionRefused as exc:
        raise ConfigError(str(exc)) from exc
