"""The injector as a real process over real HTTPS, and a real sidecar started from the
pod spec it produces.

The AdmissionReviews are what the API server sends for a ReplicaSet's pod; the
returned JSONPatch is applied by a full RFC 6902 implementation and the pod
validated against the Kubernetes schemas. Then the sidecar container's command,
arguments and environment are run as they are, the kubelet's way ($(VAR)
expansion, downward-API values), with only what a machine without Kubernetes
needs changed: each volume's mount path becomes a directory of the test, and each
port it listens on a free loopback port (``0.0.0.0`` becomes ``127.0.0.1``, so nothing
listens beyond this machine). The startup, liveness and readiness probes are then
asked exactly what the kubelet would ask (grpc.health.v1 Check on the probe's port
and service), the metrics port is scraped, and Route is called where the model
server calls it: the Router's loopback address, not the probed port."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hitl_client.router import RouterClient, route_request
from hitl_client.stubs.hitl.v1 import router_pb2_grpc as pb_grpc
from sidecar.injector import annotations as a
from tests.artefacts import confident_logits, policy_doc, temperature_artefact, write_policy
from tests.certs import Pki, serving_pair
from tests.integration.conftest import (
    hitl_command,
    listening_address,
    start_container,
    wait_for,
)
from tests.ports import free_port
from tests.unit.injector.pods import admission_review, apply_patch, pod, sidecar_of, validate

pytestmark = pytest.mark.integration

IMAGE = "ghcr.io/hitl-sidecar/hitl:0.1.0"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


# -- the injector process ----------------------------------------------------------


@dataclass
class InjectorProcess:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    def connection(self, ca_pem: bytes) -> http.client.HTTPSConnection:
        return https(self.port, ca_pem)

    def post(
        self, connection: http.client.HTTPSConnection, body: bytes, path: str = "/mutate"
    ) -> tuple[int, dict[str, Any]]:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())


def https(port: int, ca_pem: bytes) -> http.client.HTTPSConnection:
    """A connection to the webhook on port that trusts only ca_pem."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    return http.client.HTTPSConnection("localhost", port, context=context, timeout=10)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return serving_pair(tmp_path / "tls", "test-ca-1")


@pytest.fixture
def injector(tmp_path: Path, pki: Pki) -> Iterator[InjectorProcess]:
    port_file = tmp_path / "injector.addr"
    metrics_port = free_port()
    log = tmp_path / "injector.log"
    command = hitl_command(
        "injector", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
        "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--image", IMAGE,
        "--registry", "hitl-registry.hitl-system.svc:7433",
        "--sink", "review://hitl-review.hitl-system.svc:7432",
        "--metrics-addr", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HITL_INJECTOR_DRAIN_SECONDS": "0.2"},
        )
    try:
        port = int(listening_address(process, port_file, log, "injector").rpartition(":")[2])
        yield InjectorProcess(process, port, metrics_port, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def injected_pod(injector: InjectorProcess, pki: Pki, original: dict[str, Any]) -> dict[str, Any]:
    connection = injector.connection(pki.ca_pem)
    try:
        status, document = injector.post(
            connection, json.dumps(admission_review(original)).encode()
        )
    finally:
        connection.close()
    assert status == 200
    response = document["response"]
    assert response["allowed"] is True, response
    assert response["patchType"] == "JSONPatch"
    return apply_patch(original, json.loads(base64.b64decode(response["patch"])))


# -- the tests ---------------------------------------------------------------------


def test_reviews_over_https_on_one_kept_alive_connection(
    injector: InjectorProcess, pki: Pki
) -> None:
    """A verified TLS connection answers an injection, a denial naming the annotation,
    a pass-through and a malformed body (400), in turn on the same connection."""
    connection = injector.connection(pki.ca_pem)
    try:
        original = pod()
        review = admission_review(original)
        status, document = injector.post(connection, json.dumps(review).encode())
        assert status == 200
        assert document["apiVersion"] == "admission.k8s.io/v1"
        assert document["response"]["uid"] == review["request"]["uid"]
        patched = apply_patch(original, json.loads(base64.b64decode(document["response"]["patch"])))
        validate(patched)
        sidecar = sidecar_of(patched)
        assert sidecar["image"] == IMAGE
        assert sidecar["restartPolicy"] == "Always"

        bad = admission_review(pod({a.MODEL: "fraud", a.MEMORY_LIMIT: "lots"}))
        status, document = injector.post(connection, json.dumps(bad).encode())
        assert status == 200
        assert document["response"]["allowed"] is False
        assert (
            "hitl.dev/memory-limit: 'lots' is not a quantity"
            in (document["response"]["status"]["message"])
        )

        status, document = injector.post(connection, json.dumps(admission_review(patched)).encode())
        assert (status, document["response"]) == (
            200,
            {"uid": document["response"]["uid"], "allowed": True},
        )  # already injected: left alone

        status, document = injector.post(connection, b'{"kind": "Pod"}')
        assert status == 400
        assert "AdmissionReview" in document["error"]
    finally:
        connection.close()
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{injector.metrics_port}/metrics", timeout=5)
    text = scrape.read().decode()
    for result in ("injected", "rejected", "skipped", "invalid"):
        assert re.search(rf'hitl_injector_admissions_total\{{[^}}]*result="{result}"', text), result
    assert "hitl_injector_duration_milliseconds_bucket" in text


def test_an_untrusted_client_or_plain_http_gets_nothing(injector: InjectorProcess) -> None:
    """A client that does not trust the CA fails the handshake; plain HTTP is not served."""
    stranger = serving_pair(injector.log.parent / "other", "some-other-ca")
    connection = injector.connection(stranger.ca_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        connection.request("GET", "/healthz")
    connection.close()
    with socket.create_connection(("127.0.0.1", injector.port), timeout=5) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = raw.recv(100)
        except ConnectionResetError:  # the TLS layer drops it: what it should do
            answer = b""
        assert b"200" not in answer


def test_a_renewed_certificate_is_served_without_a_restart(
    injector: InjectorProcess, pki: Pki
) -> None:
    """New files under the same paths (a renewal) are served on the next connection."""
    renewed = serving_pair(pki.cert.parent, "test-ca-2")

    def serves_renewed() -> bool:
        connection = injector.connection(renewed.ca_pem)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except ssl.SSLError:
            return False
        finally:
            connection.close()

    wait_for(serves_renewed, 10, "the renewed certificate")
    assert "tls.reloaded" in injector.log.read_text()


def test_sigterm_turns_not_ready_and_exits_cleanly(injector: InjectorProcess, pki: Pki) -> None:
    """Ready until SIGTERM; then it drains and exits 0."""
    connection = injector.connection(pki.ca_pem)
    connection.request("GET", "/readyz")
    assert json.loads(connection.getresponse().read()) == {"status": "ready"}
    connection.close()
    injector.process.send_signal(signal.SIGTERM)
    assert injector.process.wait(timeout=20) == 0


def test_the_injected_spec_runs_a_serving_sidecar(
    injector: InjectorProcess, pki: Pki, tmp_path: Path
) -> None:
    """The patched pod's sidecar, started from its own command, arguments and
    environment, answers its startup, liveness and readiness probes SERVING on its
    health port (which serves no Route), serves metrics on its metrics port, routes on
    loopback, and stops cleanly on SIGTERM."""
    annotations = {a.MODEL: "fraud", a.POLICY: "fraud-policy", a.SINK: "", a.STATE_SIZE: "64Mi"}
    patched = injected_pod(injector, pki, pod(annotations))
    validate(patched)
    sidecar = sidecar_of(patched)

    # The policy ConfigMap's content: a policy and the calibrator it names.
    configmap = tmp_path / "configmaps" / "fraud-policy"
    configmap.mkdir(parents=True)
    write_policy(
        configmap / "policy.yaml", policy_doc(temperature_artefact(configmap / "cal.onnx"))
    )
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in sidecar["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            assert volume["configMap"]["name"] == "fraud-policy"
            mounts[mount["mountPath"]] = configmap
        else:
            assert volume["emptyDir"] == {"sizeLimit": "64Mi"}
            mounts[mount["mountPath"]] = tmp_path / "volumes" / mount["name"]
            mounts[mount["mountPath"]].mkdir(parents=True)
    env = kubelet_env(sidecar["env"], {"metadata.name": "fraud-model-7d9f-x2x9z",
                                       "metadata.namespace": "models"})  # fmt: skip
    # Route is for the pod's own containers only; the kubelet probes another port.
    router_host, _, router_port = env["HITL_LISTEN"].rpartition(":")
    assert router_host == "127.0.0.1"
    declared = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert int(router_port) not in declared.values()
    assert {sidecar[probe]["grpc"]["port"] for probe in PROBES} == {declared["hitl-health"]}
    ports = {port: free_port() for port in (*declared.values(), int(router_port))}
    env = {name: on_this_machine(value, mounts, ports) for name, value in env.items()}
    log = tmp_path / "sidecar.log"
    process = start_container(sidecar, env, tmp_path, log)
    try:
        for probe in PROBES:
            grpc_probe = sidecar[probe]["grpc"]
            target = f"127.0.0.1:{ports[grpc_probe['port']]}"
            service = grpc_probe.get("service", "")
            wait_for(
                lambda t=target, s=service: health(t, s) == "SERVING",
                30,
                f"{probe} SERVING (the sidecar's log: {log})",
            )
        local = {p["name"]: ports[p["containerPort"]] for p in sidecar["ports"]}
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{local['hitl-metrics']}/metrics")
        assert "hitl_policy_revision" in scrape.read().decode()
        request = route_request("order-1", "m", confident_logits(1))
        with (
            grpc.insecure_channel(f"127.0.0.1:{local['hitl-health']}") as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            pb_grpc.RouterStub(channel).Route(request, timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with RouterClient(env["HITL_LISTEN"]) as client:
            decision = client.route(request)
        assert decision.predicted_label == "dog"
        # State went where the volume is mounted; the audit record went to stdout.
        state = mounts[env_value(sidecar, "HITL_STATE_DIR")]
        assert (state / "spool").is_dir()
        wait_for(lambda: '"order-1"' in log.read_text(), 5, "the audit record on stdout")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def kubelet_env(env: list[dict[str, Any]], fields: dict[str, str]) -> dict[str, str]:
    """The environment as the kubelet builds it: downward-API fields resolved, and
    $(VAR) replaced by variables defined earlier in the list."""
    result: dict[str, str] = {}
    for item in env:
        if "valueFrom" in item:
            result[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            result[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: result.get(m[1], m[0]),
                item["value"],
            )
    return result


def on_this_machine(value: str, mounts: dict[str, Path], ports: dict[int, int]) -> str:
    """A mount path becomes its test directory; 0.0.0.0:PORT and 127.0.0.1:PORT become
    a free loopback port."""
    for mount_path, directory in mounts.items():
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(directory) + value[len(mount_path) :]
    match = re.fullmatch(r"(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)", value)
    if match:
        return f"127.0.0.1:{ports[int(match[1])]}"
    return value


def env_value(container: dict[str, Any], name: str) -> str:
    return str(next(e["value"] for e in container["env"] if e["name"] == name))


def health(target: str, service: str) -> str:
    """What a kubelet gRPC probe asks: grpc.health.v1 Check for service."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_render_prints_what_the_webhook_would_run(tmp_path: Path) -> None:
    """hitl injector render injects a Deployment's pod template, and exits 2 naming
    the annotation when the webhook would deny it."""
    manifest = tmp_path / "deploy.yaml"
    template = pod()
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud-model"},
        "spec": {
            "selector": {"matchLabels": {"app": "fraud-model"}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }
    manifest.write_text(json.dumps(deployment))
    done = subprocess.run(
        hitl_command("injector", "render", str(manifest), "--image", IMAGE, "--registry", "r:1"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "name: hitl-sidecar" in done.stdout
    deployment["spec"]["template"]["metadata"]["annotations"][a.NATIVE_SIDECAR] = "sometimes"  # type: ignore[index]
    manifest.write_text(json.dumps(deployment))
    done = subprocess.run(
        hitl_command("injector", "render", str(manifest), "--image", IMAGE, "--registry", "r:1"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert 'Deployment/fraud-model: hitl.dev/native-sidecar must be "true" or "false"' in (
        done.stderr
    )


def test_render_injects_the_statefulset_recipe_onto_its_claim(tmp_path: Path) -> None:
    """hitl injector render takes the StatefulSet recipe's claim template as the state
    volume, and exits 2 when the state size would not fit on the claim."""
    recipe = Path(__file__).resolve().parents[2] / "k8s/example/statefulset/fraud-model.yaml"
    render = ("injector", "render", "-", "--image", IMAGE, "--registry", "r:1")
    done = subprocess.run(hitl_command(*render), input=recipe.read_text(),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (statefulset,) = [d for d in yaml.safe_load_all(done.stdout) if d["kind"] == "StatefulSet"]
    pod_spec = statefulset["spec"]["template"]["spec"]
    sidecar = sidecar_of(statefulset["spec"]["template"])
    assert {"name": "hitl-spool", "mountPath": "/var/lib/hitl"} in sidecar["volumeMounts"]
    assert pod_spec["securityContext"]["fsGroup"] == 10001
    too_big = recipe.read_text().replace("hitl.dev/state-size: 2Gi", "hitl.dev/state-size: 4Gi")
    done = subprocess.run(hitl_command(*render), input=too_big,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "StatefulSet/fraud-model: hitl.dev/state-size (4Gi) is more than the " in done.stderr


def test_draining_answers_not_ready_until_it_stops(pki: Pki) -> None:
    """In process: ready while serving; during the drain /readyz answers 503 and the
    webhook still works; then the port is closed. Unknown paths and methods get JSON."""
    from sidecar.injector.app import build
    from sidecar.injector.config import InjectorConfig

    config = InjectorConfig.load(
        {"listen": "127.0.0.1:0", "tls_cert": pki.cert, "tls_key": pki.key, "image": IMAGE},
        env={},
    )
    injector = build(config)
    injector.start()
    port = int(injector.address.rpartition(":")[2])

    def get(path: str) -> tuple[int, Any]:
        connection = https(port, pki.ca_pem)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    assert get("/readyz") == (200, {"status": "ready"})
    assert get("/nowhere") == (404, {"error": "no GET /nowhere"})
    assert get("/mutate") == (405, {"error": "no GET /mutate"})
    stopping = threading.Thread(target=injector.stop, args=(2.0,))
    stopping.start()
    wait_for(lambda: get("/readyz")[0] == 503, 2, "draining")
    assert get("/healthz") == (200, {"status": "ok"})
    stopping.join(20)
    assert not stopping.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
