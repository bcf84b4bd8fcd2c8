"""Where injected sidecars send their decision records: the feedback service (with its
token and TLS CA) or NATS, named by annotations or by the injector's defaults,
mounted into the sidecar and accepted by its own config loader; misplaced ones
refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]  # nkeys ships no type hints
import pytest

from sidecar.errors import ConfigError
from sidecar.injector import annotations as a
from sidecar.injector.annotations import read_settings
from sidecar.injector.config import (
    ENV_FEEDBACK,
    ENV_FEEDBACK_CA_CONFIGMAP,
    ENV_FEEDBACK_TOKEN_SECRET,
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

FEEDBACK = "hitl-feedback.hitl-system.svc:7435"
# What the production overlay gives every sidecar that does not say otherwise.
PRODUCTION = SidecarDefaults(
    image="hitl:test",
    registry="hitl-registry.hitl-system.svc:7433",
    sink="tls://nats.nats.svc:4222",
    nats_ca_configmap="hitl-nats-ca",
    nats_credentials_secret="hitl-nats-credentials",  # noqa: S106 (a Secret's name)
    feedback=FEEDBACK,
    feedback_ca_configmap="hitl-ca",
)
GIB = 2**30


def injected(annotations: dict[str, str], defaults: SidecarDefaults = PRODUCTION) -> dict[str, Any]:
    obj = pod({a.MODEL: "fraud", a.POLICY: "fraud-policy", **annotations})
    mutation = plan(obj, defaults)
    assert mutation.patch, mutation.skipped
    result = apply_patch(obj, mutation.patch)
    assert apply(obj, mutation.patch) == result
    validate(result)
    return result


def env_of(obj: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in sidecar_of(obj)["env"] if "value" in e}


def test_the_default_feedback_service_reaches_the_sidecar_config(tmp_path: Path) -> None:
    """A pod that names nothing sends decision records to the injector's default
    feedback service, over TLS with the default CA, presenting the token of the
    Secret hitl-feedback-token: both mounted read-only, and the sidecar loads them."""
    result = injected({})
    volumes = volumes_of(result)
    assert volumes["hitl-feedback-token"]["secret"] == {
        "secretName": "hitl-feedback-token",
        "items": [{"key": "token", "path": "token"}],
    }
    assert volumes["hitl-feedback-ca"]["configMap"] == {
        "name": "hitl-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    sidecar = sidecar_of(result)
    assert all(m["readOnly"] for m in sidecar["volumeMounts"] if "feedback" in m["name"])
    ca = Authority(tmp_path / "pki")
    files: dict[str, str | bytes] = {
        "/etc/hitl/feedback-ca/ca.crt": ca.ca_pem,
        "/var/run/secrets/hitl/feedback/token": "f33dback\n",
        "/etc/hitl/nats-ca/ca.crt": ca.ca_pem,
        "/var/run/secrets/hitl/nats/nats.creds": new_key(nkeys.PREFIX_BYTE_USER).seed,
    }
    config, _ = loaded_as_mounted(sidecar, tmp_path, files)
    assert config.feedback == FEEDBACK
    credentials = config.credentials("feedback")
    assert credentials.token == "f33dback"  # noqa: S105 (a test token)
    assert credentials.ca == ca.ca_pem


def test_both_spools_fit_in_the_state_volume() -> None:
    """With a feedback service the escalation spool gets 70 % of the state volume and
    the decision records' spool 20 %, so together they stay inside its size; without
    one, the escalation spool keeps 90 %."""
    env = env_of(injected({a.STATE_SIZE: "2Gi"}))
    assert int(env["HITL_SPOOL_BUDGET_BYTES"]) == int(2 * GIB * 0.7)
    assert int(env["HITL_DECISION_SPOOL_BUDGET_BYTES"]) == int(2 * GIB * 0.2)
    without = env_of(injected({a.STATE_SIZE: "2Gi", a.FEEDBACK: ""}))
    assert int(without["HITL_SPOOL_BUDGET_BYTES"]) == int(2 * GIB * 0.9)
    assert "HITL_DECISION_SPOOL_BUDGET_BYTES" not in without


def test_annotations_name_another_feedback_service() -> None:
    """hitl.dev/feedback, feedback-token-secret and feedback-ca replace the defaults;
    an empty CA means plaintext."""
    annotations = {
        a.FEEDBACK: "feedback.ml.svc:9000",
        a.FEEDBACK_TOKEN_SECRET: "fraud-feedback",
        a.FEEDBACK_CA: "ml-ca",
    }
    s = read_settings({a.MODEL: "fraud", **annotations}, PRODUCTION)
    assert (s.feedback, s.feedback_token_secret, s.feedback_ca_configmap) == (
        "feedback.ml.svc:9000",
        "fraud-feedback",
        "ml-ca",
    )
    plaintext = read_settings({a.MODEL: "fraud", a.FEEDBACK_CA: ""}, PRODUCTION)
    assert plaintext.feedback_ca_configmap == ""
    env = env_of(injected({a.FEEDBACK_CA: ""}))
    assert env["HITL_FEEDBACK"] == FEEDBACK
    assert "HITL_FEEDBACK_CA" not in env


def test_an_empty_feedback_annotation_sends_no_decision_records() -> None:
    """hitl.dev/feedback: "" turns the injector's default off: no HITL_FEEDBACK and
    no feedback token or CA mounted."""
    result = injected({a.FEEDBACK: ""})
    assert not [name for name in env_of(result) if name.startswith("HITL_FEEDBACK")]
    assert not [v for v in result["spec"]["volumes"] if "feedback" in v["name"]]


def test_without_a_default_no_feedback_is_injected() -> None:
    """An injector with no default feedback service injects none."""
    defaults = SidecarDefaults(image="hitl:test", registry="hitl-registry.hitl-system.svc:7433")
    result = injected({}, defaults)
    assert "HITL_FEEDBACK" not in env_of(result)
    assert not [v for v in result["spec"]["volumes"] if "feedback" in v["name"]]


def test_feedback_through_nats_uses_the_nats_ca_and_credentials(tmp_path: Path) -> None:
    """hitl.dev/feedback: tls://... sends decision records through JetStream with the
    NATS CA and credentials (the injector's defaults), even with a review:// sink; no
    feedback token is mounted."""
    result = injected(
        {
            a.SINK: "review://hitl-review.hitl-system.svc:7432",
            a.FEEDBACK: "tls://nats.nats.svc:4222",
        }
    )
    names = set(volumes_of(result))
    assert {"hitl-nats-ca", "hitl-nats-credentials"} <= names
    assert not {"hitl-feedback-token", "hitl-feedback-ca"} & names
    ca = Authority(tmp_path / "pki")
    files: dict[str, str | bytes] = {
        "/etc/hitl/nats-ca/ca.crt": ca.ca_pem,
        "/var/run/secrets/hitl/nats/nats.creds": new_key(nkeys.PREFIX_BYTE_USER).seed,
        "/var/run/secrets/hitl/review/token": "r3view\n",
    }
    config, _ = loaded_as_mounted(sidecar_of(result), tmp_path, files)
    assert config.feedback == "tls://nats.nats.svc:4222"
    assert config.feedback_token_file is None
    assert config.nats_access().ca == ca.ca_pem


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {a.FEEDBACK: "review://hitl-review.hitl-system.svc:7432"},
            f"{a.FEEDBACK} must be the feedback service's HOST:PORT or nats://",
        ),
        ({a.FEEDBACK: "hitl-feedback"}, f"{a.FEEDBACK} must be HOST:PORT"),
        ({a.FEEDBACK: "tls://nats.nats.svc"}, f"{a.FEEDBACK} must be HOST:PORT"),
        (
            {a.FEEDBACK: "nats://nats.nats.svc:4222", a.FEEDBACK_TOKEN_SECRET: "x"},
            f"{a.FEEDBACK_TOKEN_SECRET} is for a HOST:PORT feedback service",
        ),
        (
            {a.FEEDBACK: "", a.FEEDBACK_CA: "hitl-ca"},
            f"{a.FEEDBACK_CA} is for a HOST:PORT feedback service",
        ),
        (
            {a.FEEDBACK_TOKEN_SECRET: "Not_A_Name"},
            f"{a.FEEDBACK_TOKEN_SECRET} must name a Kubernetes object",
        ),
        (
            {a.SINK: "review://q.hitl-system.svc:7432", a.FEEDBACK: "", a.NATS_CA: "nats-ca"},
            f"{a.NATS_CA} is for a nats:// or tls:// sink or feedback",
        ),
    ],
)
def test_bad_feedback_annotations_are_refused(annotations: dict[str, str], message: str) -> None:
    """A feedback address the sidecar would not accept, a token or CA where there is
    no gRPC feedback service, a bad Secret name, NATS annotations with no NATS."""
    with pytest.raises(InjectionRefused, match=message):
        read_settings({a.MODEL: "fraud", a.POLICY: "fraud-policy", **annotations}, PRODUCTION)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (ENV_FEEDBACK, "review://q:7432", "must be the feedback service's HOST:PORT"),
        (ENV_FEEDBACK, "hitl-feedback", "must be HOST:PORT"),
        (ENV_FEEDBACK_TOKEN_SECRET, "Not_A_Name", "must name a Kubernetes object"),
        (ENV_FEEDBACK_CA_CONFIGMAP, "Not_A_Name", "must name a Kubernetes object"),
    ],
)
def test_a_bad_feedback_default_stops_the_injector_naming_it(
    var: str, value: str, message: str
) -> None:
    """The injector's feedback defaults obey the annotations' rules, at start-up."""
    env = {"HITL_INJECTOR_SIDECAR_IMAGE": "hitl:test", var: value}
    with pytest.raises(ConfigError, match=f"{var} {message}"):
        SidecarDefaults.load(env=env)
