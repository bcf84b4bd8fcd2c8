"""The loop as Kubernetes wires it: a sidecar injected with production's feedback
defaults, started from its own command and environment (mount paths mapped to test
directories holding what the Secret and ConfigMaps would), records its escalated
decision at a real feedback service over TLS, with the token and CA the injector
mounted."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hitl_client.router import RouterClient, route_request
from sidecar.feedback.client import FeedbackClient
from sidecar.injector import annotations as a
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.patch import plan
from tests.artefacts import confident_logits, policy_doc, temperature_artefact, write_policy
from tests.certs import Authority
from tests.feedback_service import add_principals
from tests.integration.conftest import (
    hitl_command,
    listening_address,
    start_container,
    wait_for,
)
from tests.ports import free_port
from tests.unit.injector.pods import apply_patch, mounted_locally, pod, sidecar_of, validate

pytestmark = pytest.mark.integration


def start_feedback_over_tls(
    workdir: Path, db: str, authority: Authority
) -> tuple[subprocess.Popen[bytes], str]:
    """``hitl feedback serve`` with a certificate from authority, SERVING over TLS."""
    served = authority.issue("hitl-feedback", server=True)
    port_file = workdir / "feedback.addr"
    command = hitl_command(
        "feedback", "serve", "--listen", "127.0.0.1:0", "--db", db,
        "--port-file", str(port_file), "--tls-cert", str(served.cert), "--tls-key", str(served.key),
    )  # fmt: skip
    with (workdir / "feedback.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    address = listening_address(process, port_file, workdir / "feedback.log", "feedback service")
    with FeedbackClient(address, ca=authority.ca_pem) as client:
        wait_for(client.serving, 20.0, "the feedback service SERVING over TLS")
    return process, address


def router_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="hitl.v1.Router"), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_injected_sidecar_records_its_decisions_at_the_feedback_service(
    tmp_path: Path,
) -> None:
    """Injected with HITL_INJECTOR_FEEDBACK and _FEEDBACK_CA_CONFIGMAP (production's
    defaults), the sidecar sends its escalated decision to the feedback service over
    TLS as the principal whose token the Secret hitl-feedback-token holds."""
    db = f"sqlite:{tmp_path / 'feedback.db'}"
    tokens = add_principals(db, {"fraud-sidecar": ("sidecar",), "ops": ("viewer",)})
    authority = Authority(tmp_path / "pki")
    feedback, address = start_feedback_over_tls(tmp_path, db, authority)
    try:
        defaults = SidecarDefaults(
            image="hitl:test", feedback=address, feedback_ca_configmap="hitl-ca"
        )
        obj = pod({a.MODEL: "fraud", a.POLICY: "fraud-policy", a.STATE_SIZE: "64Mi"})
        patched = apply_patch(obj, plan(obj, defaults).patch)
        validate(patched)
        sidecar = sidecar_of(patched)
        volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
        assert volumes["hitl-feedback-token"]["secret"]["secretName"] == "hitl-feedback-token"
        assert volumes["hitl-feedback-ca"]["configMap"]["name"] == "hitl-ca"

        # What the kubelet would mount: the Secret's token, the ConfigMaps' files.
        mounted, env = mounted_locally(sidecar, tmp_path / "volumes")
        (mounted["/var/run/secrets/hitl/feedback"] / "token").write_text(tokens["fraud-sidecar"])
        (mounted["/etc/hitl/feedback-ca"] / "ca.crt").write_bytes(authority.ca_pem)
        policy = mounted["/etc/hitl/policy"]
        write_policy(policy / "policy.yaml", policy_doc(temperature_artefact(policy / "cal.onnx")))
        router = f"127.0.0.1:{free_port()}"
        env |= {
            "HITL_LISTEN": router,
            "HITL_HEALTH_LISTEN": f"127.0.0.1:{free_port()}",
            "HITL_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        }
        assert env["HITL_FEEDBACK"] == address

        log = tmp_path / "sidecar.log"
        process = start_container(sidecar, env, tmp_path, log)
        try:
            wait_for(lambda: router_serving(router), 30.0, f"the sidecar SERVING ({log})")
            with RouterClient(router) as client:
                escalated = client.route(route_request("k8s-esc-1", "m", confident_logits(1, 0.3)))
            assert escalated.escalation_id

            def recorded() -> bool:
                with FeedbackClient(address, tokens["ops"], ca=authority.ca_pem) as ops:
                    return ops.get("k8s-esc-1").decision.escalation_id == escalated.escalation_id

            wait_for(recorded, 20.0, f"the decision at the feedback service ({log})")
        finally:
            stop(process, log)
    finally:
        stop(feedback, tmp_path / "feedback.log")
