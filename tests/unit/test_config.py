"""Start-up configuration: environment, overrides, and clear failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config import (
    ENV_HEALTH_LISTEN,
    ENV_LISTEN,
    ENV_METRICS_ADDR,
    ENV_POLICY,
    ENV_REGISTRY,
    ENV_REGISTRY_CA,
    ENV_REGISTRY_CERT,
    ENV_REGISTRY_KEY,
    ENV_REGISTRY_POLL,
    ENV_REGISTRY_PUBLIC_KEY,
    ENV_REGISTRY_TOKEN_FILE,
    ENV_REPLAY_TTL,
    SidecarConfig,
)
from sidecar.errors import ConfigError
from sidecar.policy.signing import generate_key_pair


def test_environment_and_defaults() -> None:
    """Settings come from the environment; derived paths sit in the state dir."""
    config = SidecarConfig.load(env={ENV_POLICY: "p.yaml", ENV_REPLAY_TTL: "30"})
    assert config.policy == Path("p.yaml")
    assert config.replay_ttl_seconds == 30.0
    assert config.audit_path == "hitl-state/audit.jsonl"
    assert config.spool_dir == Path("hitl-state/spool")
    assert config.spool_fsync is True


def test_overrides_beat_environment() -> None:
    """An explicit argument wins over the variable; None leaves the variable in force."""
    env = {ENV_POLICY: "env.yaml", ENV_LISTEN: "127.0.0.1:9"}
    config = SidecarConfig.load({"policy": "arg.yaml", "listen": None}, env=env)
    assert (config.policy, config.listen) == (Path("arg.yaml"), "127.0.0.1:9")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, ENV_POLICY),
        ({}, ENV_REGISTRY),
        ({ENV_POLICY: "p", ENV_LISTEN: "nowhere"}, ENV_LISTEN),
        ({ENV_POLICY: "p", ENV_LISTEN: "unix:"}, ENV_LISTEN),
        ({ENV_POLICY: "p", ENV_REPLAY_TTL: "-1"}, ENV_REPLAY_TTL),
        ({ENV_POLICY: "p", ENV_REPLAY_TTL: "soon"}, ENV_REPLAY_TTL),
        ({ENV_POLICY: "p", "HITL_LOG_LEVEL": "loud"}, "HITL_LOG_LEVEL"),
        ({ENV_POLICY: "p", "HITL_METRICS_ADDR": "9464"}, "HITL_METRICS_ADDR"),
        ({ENV_POLICY: "p", "HITL_METRICS_ADDR": "0.0.0.0:99999"}, "HITL_METRICS_ADDR"),
        ({ENV_POLICY: "p", ENV_HEALTH_LISTEN: "7434"}, ENV_HEALTH_LISTEN),
        ({ENV_POLICY: "p", ENV_HEALTH_LISTEN: "unix:/tmp/h.sock"}, ENV_HEALTH_LISTEN),
        ({ENV_POLICY: "p", ENV_HEALTH_LISTEN: "0.0.0.0:70000"}, ENV_HEALTH_LISTEN),
        ({ENV_POLICY: "p", "HITL_SINK": "http://q:80"}, "HITL_SINK"),
        ({ENV_POLICY: "p", "HITL_SINK": "review://"}, "HITL_SINK"),
        ({ENV_POLICY: "p", "HITL_SINK": "review://queue"}, "HITL_SINK"),
        ({ENV_POLICY: "p", "HITL_SINK": "nats://a:4222,review://b:50051"}, "HITL_SINK"),
        ({ENV_POLICY: "p", "HITL_SINK": "review://a:1,review://b:2"}, "HITL_SINK"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    """A bad setting fails at start-up with the variable's name in the message."""
    with pytest.raises(ConfigError, match=named):
        SidecarConfig.load(env=env)


@pytest.mark.parametrize(
    "sink", ["review://queue:50051", "nats://nats-0:4222", "nats://nats-0:4222,nats://nats-1:4222"]
)
def test_sinks_accepted(sink: str) -> None:
    """The review queue, or a JetStream cluster named by one or more nats:// URLs."""
    assert SidecarConfig.load(env={ENV_POLICY: "p", "HITL_SINK": sink}).sink == sink


def test_health_listener_is_off_by_default_and_set_by_flag_or_variable() -> None:
    """No health listener unless asked; the flag beats the variable."""
    assert SidecarConfig.load(env={ENV_POLICY: "p"}).health_listen == ""
    env = {ENV_POLICY: "p", ENV_HEALTH_LISTEN: "0.0.0.0:7434"}
    assert SidecarConfig.load(env=env).health_listen == "0.0.0.0:7434"
    assert SidecarConfig.load({"health_listen": "[::]:17434"}, env=env).health_listen == (
        "[::]:17434"
    )


@pytest.mark.parametrize(
    ("env", "other"),
    [
        ({ENV_LISTEN: "127.0.0.1:7431", ENV_HEALTH_LISTEN: "0.0.0.0:7431"}, ENV_LISTEN),
        ({ENV_METRICS_ADDR: "0.0.0.0:9464", ENV_HEALTH_LISTEN: "0.0.0.0:9464"}, ENV_METRICS_ADDR),
    ],
)
def test_health_listener_needs_a_port_of_its_own(env: dict[str, str], other: str) -> None:
    """A health port shared with the Router or metrics fails, naming both variables."""
    with pytest.raises(ConfigError, match=f"{ENV_HEALTH_LISTEN} .* than {other}"):
        SidecarConfig.load(env={ENV_POLICY: "p", **env})


def test_health_listener_beside_a_unix_socket_or_on_port_0() -> None:
    """Beside a Unix-socket Router any port will do; port 0 never clashes."""
    env = {ENV_POLICY: "p", ENV_LISTEN: "unix:/tmp/7434", ENV_HEALTH_LISTEN: "0.0.0.0:7434"}
    assert SidecarConfig.load(env=env).health_listen == "0.0.0.0:7434"
    env = {ENV_POLICY: "p", ENV_LISTEN: "127.0.0.1:0", ENV_HEALTH_LISTEN: "127.0.0.1:0"}
    assert SidecarConfig.load(env=env).health_listen == "127.0.0.1:0"


def test_unix_socket_accepted() -> None:
    """unix:PATH is a valid listen address."""
    assert (
        SidecarConfig.load({"listen": "unix:/tmp/h.sock"}, env={ENV_POLICY: "p"}).listen
        == "unix:/tmp/h.sock"
    )


@pytest.fixture
def registry_env(tmp_path: Path) -> dict[str, str]:
    """A valid registry configuration: address, public key and token file."""
    generate_key_pair(tmp_path / "signing.pem", tmp_path / "public.pem")
    (tmp_path / "token").write_text("s3cret\n")
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("PEM")
    return {
        ENV_REGISTRY: "registry.hitl:7433",
        ENV_REGISTRY_PUBLIC_KEY: str(tmp_path / "public.pem"),
        ENV_REGISTRY_TOKEN_FILE: str(tmp_path / "token"),
    }


def test_registry_settings(registry_env: dict[str, str], tmp_path: Path) -> None:
    """With HITL_REGISTRY the policy file is unset, the token is read and stripped."""
    config = SidecarConfig.load(env=registry_env)
    assert config.policy is None
    assert config.registry == "registry.hitl:7433"
    assert config.registry_token == "s3cret"  # noqa: S105 (a test token)
    assert config.registry_public_key == tmp_path / "public.pem"
    assert config.registry_ca is None
    assert config.registry_poll_seconds == 10.0
    assert config.policy_state_dir == Path("hitl-state/policy")
    assert "s3cret" not in repr(config)


def test_registry_mtls_and_overrides(registry_env: dict[str, str], tmp_path: Path) -> None:
    """CA, client certificate and key are taken together; a flag beats the variable."""
    env = {
        **registry_env,
        ENV_REGISTRY_CA: str(tmp_path / "ca.pem"),
        ENV_REGISTRY_CERT: str(tmp_path / "cert.pem"),
        ENV_REGISTRY_KEY: str(tmp_path / "key.pem"),
    }
    config = SidecarConfig.load({"registry_poll_seconds": "2.5"}, env=env)
    assert (config.registry_ca, config.registry_cert, config.registry_key) == (
        tmp_path / "ca.pem",
        tmp_path / "cert.pem",
        tmp_path / "key.pem",
    )
    assert config.registry_poll_seconds == 2.5


def test_policy_and_registry_are_exclusive(registry_env: dict[str, str]) -> None:
    """A policy file and a registry together are refused, naming both variables."""
    with pytest.raises(ConfigError, match=f"{ENV_POLICY}.*{ENV_REGISTRY}.*not both"):
        SidecarConfig.load({"policy": "p.yaml"}, env=registry_env)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({ENV_REGISTRY: "nowhere"}, ENV_REGISTRY),
        ({ENV_REGISTRY_PUBLIC_KEY: ""}, ENV_REGISTRY_PUBLIC_KEY),
        ({ENV_REGISTRY_PUBLIC_KEY: "/no/such/key.pem"}, ENV_REGISTRY_PUBLIC_KEY),
        ({ENV_REGISTRY_PUBLIC_KEY: "{tmp}/token"}, ENV_REGISTRY_PUBLIC_KEY),
        ({ENV_REGISTRY_PUBLIC_KEY: "{tmp}/signing.pem"}, ENV_REGISTRY_PUBLIC_KEY),
        ({ENV_REGISTRY_TOKEN_FILE: "/no/such/token"}, ENV_REGISTRY_TOKEN_FILE),
        ({ENV_REGISTRY_TOKEN_FILE: "{tmp}/empty"}, ENV_REGISTRY_TOKEN_FILE),
        ({ENV_REGISTRY_CA: "/no/such/ca.pem"}, ENV_REGISTRY_CA),
        ({ENV_REGISTRY_CA: "{tmp}/ca.pem", ENV_REGISTRY_CERT: "{tmp}/cert.pem"}, ENV_REGISTRY_KEY),
        ({ENV_REGISTRY_CERT: "{tmp}/cert.pem", ENV_REGISTRY_KEY: "{tmp}/key.pem"}, ENV_REGISTRY_CA),
        ({ENV_REGISTRY_POLL: "0"}, ENV_REGISTRY_POLL),
    ],
)
def test_bad_registry_settings_fail_naming_the_variable(
    registry_env: dict[str, str], tmp_path: Path, change: dict[str, str], named: str
) -> None:
    """A missing, unreadable or inconsistent registry setting names its variable."""
    (tmp_path / "empty").write_text("  \n")
    env = {**registry_env, **{k: v.format(tmp=tmp_path) for k, v in change.items()}}
    with pytest.raises(ConfigError, match=named):
        SidecarConfig.load(env=env)


def test_the_audit_key_is_read_at_start_up(tmp_path: Path) -> None:
    """HITL_AUDIT_KEY_FILE's bytes key the audit sample; a short key fails naming it."""
    key = tmp_path / "audit.key"
    key.write_bytes(b"0123456789abcdef0123\n")
    config = SidecarConfig.load(env={ENV_POLICY: "p", "HITL_AUDIT_KEY_FILE": str(key)})
    assert config.audit_key == b"0123456789abcdef0123"
    assert "0123456789" not in repr(config)
    key.write_bytes(b"short")
    with pytest.raises(ConfigError, match=r"HITL_AUDIT_KEY_FILE: .* holds 5 bytes; at least 16"):
        SidecarConfig.load(env={ENV_POLICY: "p", "HITL_AUDIT_KEY_FILE": str(key)})


def test_a_nats_sink_without_its_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py is an extra: a NATS sink without it stops start-up saying what to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nats" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"HITL_SINK: .*pip install 'hitl-sidecar\[nats\]'"):
        SidecarConfig.load(env={ENV_POLICY: "p", "HITL_SINK": "nats://n:4222"})
