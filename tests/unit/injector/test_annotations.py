"""Pod annotations into PodSettings, and every bad value refused by name."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.injector import annotations as a
from sidecar.injector.annotations import FromConfigMap, FromRegistry, read_settings
from sidecar.injector.config import (
    ENV_NATIVE_SIDECAR,
    ENV_REGISTRY,
    ENV_SIDECAR_IMAGE,
    ENV_SINK,
    InjectorConfig,
    SidecarDefaults,
)
from sidecar.injector.errors import InjectionRefused
from sidecar.injector.quantity import parse_quantity

DEFAULTS = SidecarDefaults(image="hitl:test", registry="hitl-registry.hitl-system.svc:7433")


def settings(**annotations: str) -> a.PodSettings:
    return read_settings({a.MODEL: "fraud", **annotations}, DEFAULTS)


def refusal(annotations: dict[str, str], defaults: SidecarDefaults = DEFAULTS) -> str:
    with pytest.raises(InjectionRefused) as caught:
        read_settings(annotations, defaults)
    return str(caught.value)


def test_defaults_take_the_policy_from_the_default_registry() -> None:
    """With only a model named, the sidecar follows the injector's default registry."""
    s = settings()
    assert s.model == "fraud"
    assert s.policy == FromRegistry(
        "hitl-registry.hitl-system.svc:7433", "hitl-registry-token", "hitl-registry-public-key"
    )
    assert (s.port, s.health_port, s.metrics_port) == (7431, 7434, 9464)
    assert (s.native, s.log_level) == (True, "info")
    assert s.spool_budget_bytes == int(2**30 * 0.9)
    assert s.resources == a.Resources("100m", "", "256Mi", "512Mi")


def test_every_annotation_is_read() -> None:
    """Each annotation lands in its setting."""
    s = settings(
        **{
            a.REGISTRY: "10.0.0.7:9000",
            a.REGISTRY_TOKEN_SECRET: "fraud-token",
            a.REGISTRY_PUBLIC_KEY: "registry-key",
            a.REGISTRY_CA: "registry-ca",
            a.SINK: "nats://nats-0.nats:4222,nats://nats-1.nats:4222",
            a.PORT: "17431",
            a.HEALTH_PORT: "17434",
            a.METRICS_PORT: "19464",
            a.NATIVE_SIDECAR: "false",
            a.CPU_REQUEST: "250m",
            a.CPU_LIMIT: "1",
            a.MEMORY_REQUEST: "300Mi",
            a.MEMORY_LIMIT: "1Gi",
            a.STATE_SIZE: "100Mi",
            a.STATE_VOLUME: "spool",
            a.LOG_LEVEL: "debug",
            a.DRAIN_SECONDS: "25",
        }
    )
    assert s.policy == FromRegistry("10.0.0.7:9000", "fraud-token", "registry-key", "registry-ca")
    assert s.sink == "nats://nats-0.nats:4222,nats://nats-1.nats:4222"
    assert (s.port, s.health_port, s.metrics_port, s.native) == (17431, 17434, 19464, False)
    assert s.resources == a.Resources("250m", "1", "300Mi", "1Gi")
    assert (s.state_size, s.spool_budget_bytes) == ("100Mi", int(100 * 2**20 * 0.9))
    assert (s.state_volume, s.log_level) == ("spool", "debug")
    assert (s.drain_seconds, s.drain_annotated) == (25, True)


def test_policy_configmap_instead_of_a_registry() -> None:
    """hitl.dev/policy names a ConfigMap; no registry is needed then."""
    no_registry = SidecarDefaults(image="hitl:test")
    s = read_settings({a.MODEL: "fraud", a.POLICY: "fraud-policy"}, no_registry)
    assert s.policy == FromConfigMap("fraud-policy")


def test_the_default_sink_applies_unless_overridden() -> None:
    """The injector's default sink is used; an annotation replaces it."""
    defaults = SidecarDefaults(image="i", registry="r:1", sink="review://q.hitl-system.svc:7432")
    assert read_settings({a.MODEL: "m"}, defaults).sink == "review://q.hitl-system.svc:7432"
    overridden = read_settings({a.MODEL: "m", a.SINK: "nats://n:4222"}, defaults)
    assert overridden.sink == "nats://n:4222"


def test_a_review_sink_brings_its_token_secret() -> None:
    """A review:// sink mounts the injector's default review token Secret, or the one
    the pod names; any other sink has none."""
    defaults = SidecarDefaults(image="i", registry="r:1", sink="review://q.hitl-system.svc:7432")
    secret = read_settings({a.MODEL: "m"}, defaults).review_token_secret
    assert secret == "hitl-review-token"  # noqa: S105 (a Secret's name)
    named = {a.MODEL: "m", a.REVIEW_TOKEN_SECRET: "fraud-review-token"}
    secret = read_settings(named, defaults).review_token_secret
    assert secret == "fraud-review-token"  # noqa: S105 (a Secret's name)
    nats = read_settings({a.MODEL: "m", a.SINK: "nats://n:4222"}, defaults)
    assert nats.review_token_secret == ""


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, "hitl.dev/model is required"),
        ({a.MODEL: "Fraud"}, "hitl.dev/model must be a DNS label"),
        ({a.MODEL: "x" * 64}, "hitl.dev/model must be a DNS label"),
        ({a.MODEL: "m", "hitl.dev/modle": "m"}, "unknown annotation hitl.dev/modle"),
        ({a.MODEL: "m", a.INJECT: "true"}, "is a label, not an annotation"),
        ({a.MODEL: "m", a.REGISTRY: "registry"}, "hitl.dev/registry must be HOST:PORT"),
        ({a.MODEL: "m", a.REGISTRY: "r:70000"}, "hitl.dev/registry must be HOST:PORT"),
        ({a.MODEL: "m", a.REGISTRY: "bad_host:1"}, "hitl.dev/registry must be HOST:PORT"),
        ({a.MODEL: "m", a.REGISTRY: "r:1", a.POLICY: "p"}, "both set"),
        ({a.MODEL: "m", a.POLICY: "Policy!"}, "hitl.dev/policy must name a Kubernetes object"),
        ({a.MODEL: "m", a.REGISTRY_TOKEN_SECRET: "a/b"}, "hitl.dev/registry-token-secret"),
        ({a.MODEL: "m", a.REGISTRY_CA: "CA"}, "hitl.dev/registry-ca must name a Kubernetes"),
        ({a.MODEL: "m", a.SINK: "http://q:80"}, "hitl.dev/sink must be review://HOST:PORT"),
        ({a.MODEL: "m", a.SINK: "review://a:1,review://b:1"}, "hitl.dev/sink must be"),
        ({a.MODEL: "m", a.SINK: "nats://n"}, "hitl.dev/sink must be HOST:PORT"),
        (
            {a.MODEL: "m", a.SINK: "review://q:1", a.REVIEW_TOKEN_SECRET: "Token"},
            "hitl.dev/review-token-secret must name a Kubernetes",
        ),
        (
            {a.MODEL: "m", a.SINK: "nats://n:4222", a.REVIEW_TOKEN_SECRET: "t"},
            "hitl.dev/review-token-secret is for a review:// sink",
        ),
        (
            {a.MODEL: "m", a.SINK: "nats://n:4222", a.REVIEW_CA: "ca"},
            "hitl.dev/review-ca is for a review:// sink",
        ),
        (
            {a.MODEL: "m", a.SINK: "review://q:1", a.REVIEW_CA: "CA!"},
            "hitl.dev/review-ca must name a Kubernetes",
        ),
        ({a.MODEL: "m", a.PORT: "80"}, "hitl.dev/port must be a port number from 1024"),
        ({a.MODEL: "m", a.PORT: "seven"}, "hitl.dev/port must be a port number"),
        ({a.MODEL: "m", a.METRICS_PORT: "70000"}, "hitl.dev/metrics-port must be a port"),
        ({a.MODEL: "m", a.PORT: "9464"}, "must differ, both are 9464"),
        ({a.MODEL: "m", a.HEALTH_PORT: "443"}, "hitl.dev/health-port must be a port number"),
        ({a.MODEL: "m", a.HEALTH_PORT: "7431"}, "port and hitl.dev/health-port must differ"),
        ({a.MODEL: "m", a.HEALTH_PORT: "9464"}, "health-port and hitl.dev/metrics-port must"),
        ({a.MODEL: "m", a.PORT: "7434"}, "hitl.dev/port and hitl.dev/health-port must differ"),
        ({a.MODEL: "m", a.NATIVE_SIDECAR: "yes"}, 'hitl.dev/native-sidecar must be "true"'),
        ({a.MODEL: "m", a.CPU_REQUEST: "lots"}, "hitl.dev/cpu-request: 'lots' is not a quantity"),
        ({a.MODEL: "m", a.MEMORY_LIMIT: "1Gb"}, "hitl.dev/memory-limit: '1Gb' has an unknown"),
        ({a.MODEL: "m", a.MEMORY_LIMIT: "0"}, "hitl.dev/memory-limit must be positive"),
        ({a.MODEL: "m", a.MEMORY_LIMIT: "128Mi"}, "memory-limit (128Mi) is below"),
        ({a.MODEL: "m", a.CPU_REQUEST: "2", a.CPU_LIMIT: "500m"}, "cpu-limit (500m) is below"),
        ({a.MODEL: "m", a.STATE_SIZE: "1Mi"}, "hitl.dev/state-size must be a whole number"),
        ({a.MODEL: "m", a.STATE_VOLUME: "My_Volume"}, "hitl.dev/state-volume must be a DNS"),
        ({a.MODEL: "m", a.LOG_LEVEL: "trace"}, "hitl.dev/log-level must be one of"),
        ({a.MODEL: "m", a.DRAIN_SECONDS: "0"}, "hitl.dev/drain-seconds must be a whole number"),
        ({a.MODEL: "m", a.DRAIN_SECONDS: "2.5"}, "of seconds from 1 to 3600, got '2.5'"),
        ({a.MODEL: "m", a.DRAIN_SECONDS: "3601"}, "hitl.dev/drain-seconds must be a whole"),
        ({a.MODEL: "m", a.DRAIN_SECONDS: "1²"}, "hitl.dev/drain-seconds must be a whole"),
    ],
)
def test_bad_values_are_refused_by_name(annotations: dict[str, str], expected: str) -> None:
    """A wrong annotation is refused with its name and what would be accepted."""
    assert expected in refusal(annotations)


def test_no_policy_source_at_all_is_refused() -> None:
    """Without a default registry, a pod must say where its policy comes from."""
    message = refusal({a.MODEL: "m"}, SidecarDefaults(image="i"))
    assert "no policy source" in message
    assert a.REGISTRY in message
    assert a.POLICY in message


def test_other_prefixes_are_not_ours() -> None:
    """Annotations outside hitl.dev/ (or merely similar) are ignored."""
    s = settings(**{"example.com/x": "1", "hitl.dev.example/x": "2"})
    assert s.model == "fraud"


def test_ipv6_and_ipv4_registry_addresses() -> None:
    """A registry may be named by IP, IPv6 in brackets."""
    assert settings(**{a.REGISTRY: "[fd00::1]:7433"}).policy.address == "[fd00::1]:7433"  # type: ignore[union-attr]
    assert "HOST:PORT" in refusal({a.MODEL: "m", a.REGISTRY: "[nothost]:1"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("256Mi", Decimal(256 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("512k", Decimal(512_000)),
        (".5", Decimal("0.5")),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    """Quantities in the forms Kubernetes writes them."""
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "-1", "1e3", "1 Gi", "Gi", "1GiB", "0x10"])
def test_bad_quantities(text: str) -> None:
    """Anything else is a ValueError."""
    with pytest.raises(ValueError, match=r"quantity|suffix"):
        parse_quantity(text)


def test_injector_config_from_environment() -> None:
    """The injector's defaults come from its environment and fail at start-up by name."""
    config = InjectorConfig.load(
        env={ENV_SIDECAR_IMAGE: "hitl:1", ENV_NATIVE_SIDECAR: "false", ENV_REGISTRY: "r:1"}
    )
    assert (config.sidecar.image, config.sidecar.native, config.sidecar.registry) == (
        "hitl:1",
        False,
        "r:1",
    )
    assert config.listen == "0.0.0.0:8443"
    with pytest.raises(ConfigError, match=ENV_SIDECAR_IMAGE):
        InjectorConfig.load(env={})
    with pytest.raises(ConfigError, match=ENV_NATIVE_SIDECAR):
        SidecarDefaults.load(env={ENV_SIDECAR_IMAGE: "i", ENV_NATIVE_SIDECAR: "maybe"})
    with pytest.raises(ConfigError, match=ENV_SINK):
        SidecarDefaults.load(env={ENV_SIDECAR_IMAGE: "i", ENV_SINK: "kafka://k:1"})
    with pytest.raises(ConfigError, match=ENV_REGISTRY):
        SidecarDefaults.load(env={ENV_SIDECAR_IMAGE: "i", ENV_REGISTRY: "nowhere"})


def test_every_annotation_has_a_row_in_the_kubernetes_page() -> None:
    """docs/kubernetes.md's annotation table lists every annotation a pod may set,
    and no other."""
    page = (Path(__file__).parents[3] / "docs" / "kubernetes.md").read_text()
    table = page.split("## Annotations", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `hitl.dev/")]
    documented = {name for cell in rows for name in re.findall(r"`(hitl\.dev/[a-z-]+)`", cell)}
    assert documented == set(a.KNOWN) - {a.STATUS}
