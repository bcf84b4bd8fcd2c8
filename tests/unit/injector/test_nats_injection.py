"""A NATS sink's TLS CA and credentials, named by annotations or by the injector's
defaults, mounted into the sidecar and accepted by its own config loader; misplaced
or doubled ones refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]  # nkeys ships no type hints
import pytest

from sidecar.errors import ConfigError
from sidecar.injector import annotations as a
from sidecar.injector.annotations import read_settings
from sidecar.injector.config import (
    ENV_NATS_CA_CONFIGMAP,
    ENV_NATS_CREDENTIALS_SECRET,
    SidecarDefaults,
)
from sidecar.injector.errors import InjectionRefused
from sidecar.injector.patch import apply, plan
from tests.certs import Authority
from tests.natsauth import new_key
from tests.unit.injector.pods import (
    apply_patch,
    loaded_as_mounted,
    pod,
    sidecar_of,
    validate,
    volumes_of,
)

DEFAULTS = SidecarDefaults(
    image="hitl:test",
    registry="hitl-registry.hitl-system.svc:7433",
    sink="tls://nats.nats.svc:4222",
)


# What the production overlay gives every sidecar that does not say otherwise.
PRODUCTION = SidecarDefaults(
    image="hitl:test",
    registry="hitl-registry.hitl-system.svc:7433",
    sink="tls://nats.nats.svc:4222",
    nats_ca_configmap="hitl-nats-ca",
    nats_credentials_secret="hitl-nats-credentials",  # noqa: S106 (a Secret's name)
)


def injected(annotations: dict[str, str], defaults: SidecarDefaults = DEFAULTS) -> dict[str, Any]:
    obj = pod({a.MODEL: "fraud", a.POLICY: "fraud-policy", **annotations})
    mutation = plan(obj, defaults)
    assert mutation.patch, mutation.skipped
    result = apply_patch(obj, mutation.patch)
    assert apply(obj, mutation.patch) == result
    return result


def test_ca_and_token_secret_reach_the_sidecar_config(tmp_path: Path) -> None:
    """nats-ca and nats-token-secret: both mounted read-only, and the environment the
    sidecar loads names them (HITL_NATS_CA, HITL_NATS_TOKEN_FILE)."""
    result = injected({a.NATS_CA: "nats-ca", a.NATS_TOKEN_SECRET: "fraud-nats"})
    validate(result)
    sidecar = sidecar_of(result)
    volumes = volumes_of(result)
    assert volumes["hitl-nats-ca"]["configMap"]["name"] == "nats-ca"
    assert volumes["hitl-nats-credentials"]["secret"] == {
        "secretName": "fraud-nats",
        "items": [{"key": "token", "path": "token"}],
    }
    assert all(m["readOnly"] for m in sidecar["volumeMounts"] if "nats" in m["name"])
    ca = Authority(tmp_path / "pki")
    files: dict[str, str | bytes] = {
        "/etc/hitl/nats-ca/ca.crt": ca.ca_pem,
        "/var/run/secrets/hitl/nats/token": "n4ts\n",
    }
    config, mounted = loaded_as_mounted(sidecar, tmp_path, files)
    assert config.sink == "tls://nats.nats.svc:4222"
    access = config.nats_access()
    assert access.ca == ca.ca_pem
    assert access.token_file == mounted["/var/run/secrets/hitl/nats"] / "token"


def test_a_credentials_secret_mounts_its_creds_key() -> None:
    """nats-credentials-secret mounts the Secret's key nats.creds as HITL_NATS_CREDS_FILE."""
    result = injected({a.NATS_CREDENTIALS_SECRET: "fraud-nats"})
    validate(result)
    env = {e["name"]: e.get("value") for e in sidecar_of(result)["env"]}
    assert env["HITL_NATS_CREDS_FILE"] == "/var/run/secrets/hitl/nats/nats.creds"
    assert "HITL_NATS_CA" not in env
    volumes = volumes_of(result)
    assert volumes["hitl-nats-credentials"]["secret"]["items"] == [
        {"key": "nats.creds", "path": "nats.creds"}
    ]


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {a.NATS_CREDENTIALS_SECRET: "x", a.NATS_TOKEN_SECRET: "y"},
            "two ways to authenticate",
        ),
        ({a.NATS_CA: "Not_A_Name"}, f"{a.NATS_CA} must name a Kubernetes object"),
        (
            {a.SINK: "review://hitl-review.hitl-system.svc:7432", a.NATS_CA: "nats-ca"},
            f"{a.NATS_CA} is for a nats:// or tls:// sink",
        ),
    ],
)
def test_misplaced_nats_annotations_are_refused(annotations: dict[str, str], message: str) -> None:
    """Both kinds of credentials, a bad name, or a NATS annotation for a review:// sink."""
    obj = pod({a.MODEL: "fraud", a.POLICY: "fraud-policy", **annotations})
    with pytest.raises(InjectionRefused, match=message):
        plan(obj, DEFAULTS)


def test_the_injectors_nats_defaults_reach_a_pod_that_names_none(tmp_path: Path) -> None:
    """With HITL_INJECTOR_NATS_CA_CONFIGMAP and _NATS_CREDENTIALS_SECRET set, a pod
    that names neither gets both mounted read-only, and the sidecar loads them."""
    result = injected({}, PRODUCTION)
    validate(result)
    volumes = volumes_of(result)
    assert volumes["hitl-nats-ca"]["configMap"] == {
        "name": "hitl-nats-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert volumes["hitl-nats-credentials"]["secret"] == {
        "secretName": "hitl-nats-credentials",
        "items": [{"key": "nats.creds", "path": "nats.creds"}],
    }
    sidecar = sidecar_of(result)
    assert all(m["readOnly"] for m in sidecar["volumeMounts"] if "nats" in m["name"])
    ca = Authority(tmp_path / "pki")
    files: dict[str, str | bytes] = {
        "/etc/hitl/nats-ca/ca.crt": ca.ca_pem,
        "/var/run/secrets/hitl/nats/nats.creds": new_key(nkeys.PREFIX_BYTE_USER).seed,
    }
    config, mounted = loaded_as_mounted(sidecar, tmp_path, files)
    access = config.nats_access()
    assert access.ca == ca.ca_pem
    assert access.creds_file == mounted["/var/run/secrets/hitl/nats"] / "nats.creds"
    assert access.token_file is None


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({a.NATS_CA: "fraud-nats-ca"}, ("fraud-nats-ca", "hitl-nats-credentials", "")),
        ({a.NATS_CREDENTIALS_SECRET: "fraud-nats"}, ("hitl-nats-ca", "fraud-nats", "")),
        ({a.NATS_TOKEN_SECRET: "fraud-token"}, ("hitl-nats-ca", "", "fraud-token")),
        ({a.NATS_CA: "", a.NATS_CREDENTIALS_SECRET: ""}, ("", "", "")),
        ({a.NATS_CREDENTIALS_SECRET: "", a.NATS_TOKEN_SECRET: "t"}, ("hitl-nats-ca", "", "t")),
    ],
)
def test_a_pods_nats_annotations_replace_the_defaults(
    annotations: dict[str, str], expected: tuple[str, str, str]
) -> None:
    """Each annotation replaces its default, an empty one turns it off, and a token
    Secret replaces the default credentials (one kind of credentials per pod)."""
    s = read_settings({a.MODEL: "fraud", **annotations}, PRODUCTION)
    assert (s.nats_ca_configmap, s.nats_credentials_secret, s.nats_token_secret) == expected


def test_a_token_secret_mounts_no_default_credentials() -> None:
    """A pod naming hitl.dev/nats-token-secret mounts its token, not nats.creds."""
    result = injected({a.NATS_TOKEN_SECRET: "fraud-token"}, PRODUCTION)
    validate(result)
    env = {e["name"]: e.get("value") for e in sidecar_of(result)["env"]}
    assert env["HITL_NATS_TOKEN_FILE"] == "/var/run/secrets/hitl/nats/token"  # noqa: S105 (a path)
    assert "HITL_NATS_CREDS_FILE" not in env
    (volume,) = [v for v in result["spec"]["volumes"] if v["name"] == "hitl-nats-credentials"]
    assert volume["secret"]["secretName"] == "fraud-token"


def test_nats_defaults_leave_a_review_sink_alone() -> None:
    """A pod whose sink is the review queue (and that sends no decision records to
    NATS) mounts no NATS CA or credentials, whatever the injector's defaults."""
    result = injected({a.SINK: "review://hitl-review.hitl-system.svc:7432"}, PRODUCTION)
    validate(result)
    names = set(volumes_of(result))
    assert not {"hitl-nats-ca", "hitl-nats-credentials"} & names
    assert not [e for e in sidecar_of(result)["env"] if e["name"].startswith("HITL_NATS_")]


@pytest.mark.parametrize("var", [ENV_NATS_CA_CONFIGMAP, ENV_NATS_CREDENTIALS_SECRET])
def test_a_bad_nats_default_stops_the_injector_naming_it(var: str) -> None:
    """A NATS default that cannot name a Kubernetes object fails at start-up."""
    env = {"HITL_INJECTOR_SIDECAR_IMAGE": "hitl:test", var: "Not_A_Name"}
    with pytest.raises(ConfigError, match=f"{var} must name a Kubernetes object"):
        SidecarDefaults.load(env=env)
