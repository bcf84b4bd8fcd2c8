"""Acknowledged escalations survive the death of their pod on the layout the docs
recommend: k8s/example/statefulset, whose sidecar keeps its spool on the pod's own
PersistentVolumeClaim.

The recipe's pod template is rendered by the injector, as the webhook would inject
it, and its sidecar is run from its own command and environment (the kubelet's way;
see test_injector.py): the claim is a directory of the test, which outlives the
process as a claim outlives its pod. With the sink (a NATS server of the test's
own, on a port where nothing listens yet) down, escalations are acknowledged; the
sidecar is stopped as Kubernetes stops a pod (SIGTERM, SIGKILL once the grace period
is over), a new sidecar process starts on the same claim, the sink comes up, and
every acknowledged escalation arrives exactly once."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hitl_client.router import RouterClient
from sidecar.escalation.spool import read_unacked
from sidecar.injector import annotations as a
from sidecar.injector.cli import render_object
from sidecar.injector.config import SidecarDefaults
from sidecar.injector.container import ROUTER_SERVICE
from tests.artefacts import policy_doc, temperature_artefact, write_policy
from tests.integration.conftest import hitl_command, wait_for
from tests.integration.test_injector import IMAGE, health, kubelet_env, on_this_machine
from tests.integration.test_sidecar_process import ok
from tests.natsserver import NatsServer
from tests.ports import free_port
from tests.unit.injector.pods import sidecar_of

pytestmark = pytest.mark.integration

RECIPE = Path(__file__).resolve().parents[2] / "k8s/example/statefulset/fraud-model.yaml"
POD = "fraud-model-0"
ESCALATIONS = 40
DRAIN = "2"  # hitl.dev/drain-seconds: short, so the test does not wait the recipe's 20 s
# Test-only: a failed delivery is retried within a second or two, not 30 s.
FAST_RETRY = {"HITL_FORWARD_MAX_BACKOFF_SECONDS": "1.5", "HITL_FORWARD_TIMEOUT_SECONDS": "2"}


@dataclass
class Pod:
    """The recipe's pod as injected: its sidecar container and grace period."""

    sidecar: dict[str, Any]
    volumes: dict[str, dict[str, Any]]
    grace_seconds: int


def injected_recipe(sink: str) -> Pod:
    """The StatefulSet recipe through the injector, its policy from a ConfigMap (no
    registry in this test) and its sink the test's NATS server."""
    (statefulset,) = [
        d for d in yaml.safe_load_all(RECIPE.read_text()) if d and d["kind"] == "StatefulSet"
    ]
    statefulset = copy.deepcopy(statefulset)
    statefulset["metadata"]["namespace"] = "models"
    template = statefulset["spec"]["template"]
    template["metadata"]["annotations"] |= {
        a.POLICY: "fraud-policy",
        a.SINK: sink,
        a.DRAIN_SECONDS: DRAIN,
    }
    rendered = render_object(statefulset, SidecarDefaults(image=IMAGE))
    spec = rendered["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for claim in rendered["spec"]["volumeClaimTemplates"]:  # as the controller adds them
        name = claim["metadata"]["name"]
        volumes[name] = {"name": name, "persistentVolumeClaim": {"claimName": f"{name}-{POD}"}}
    return Pod(sidecar_of(rendered["spec"]["template"]), volumes,
               spec["terminationGracePeriodSeconds"])  # fmt: skip


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    ports: dict[str, int]  # container port name -> the loopback port it got
    log: Path

    def ready(self) -> bool:
        return health(f"127.0.0.1:{self.ports['hitl-health']}", ROUTER_SERVICE) == "SERVING"

    def scrape(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.ports['hitl-metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        raise AssertionError(f"{name} not in the scrape")

    def stop_as_kubernetes_would(self, grace_seconds: float) -> str:
        """SIGTERM, then SIGKILL if it is still running when the grace period ends;
        "exited" or "killed"."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "killed"
        return "exited"


def start(pod: Pod, claims: Path, configmaps: Path, workdir: Path) -> Running:
    """The injected sidecar, run from its own command and environment: each volume's
    mount path a directory of the test (a claim's named as its PersistentVolumeClaim),
    each port a free loopback port."""
    sidecar = pod.sidecar
    mounts: dict[str, Path] = {}
    for mount in sidecar["volumeMounts"]:
        volume = pod.volumes[mount["name"]]
        if "configMap" in volume:
            mounts[mount["mountPath"]] = configmaps / volume["configMap"]["name"]
        else:
            claim = volume["persistentVolumeClaim"]["claimName"]  # nothing else is mounted
            mounts[mount["mountPath"]] = claims / claim
            mounts[mount["mountPath"]].mkdir(parents=True, exist_ok=True)
    env = kubelet_env(sidecar["env"], {"metadata.name": POD, "metadata.namespace": "models"})
    router_port = int(env["HITL_LISTEN"].rpartition(":")[2])
    declared = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    free = {port: free_port() for port in (*declared.values(), router_port)}
    env = {name: on_this_machine(value, mounts, free) for name, value in env.items()}
    workdir.mkdir()
    log = workdir / "sidecar.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            hitl_command(*sidecar["command"][1:], *sidecar.get("args", [])),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], **env, **FAST_RETRY},
            cwd=workdir,
        )
    running = Running(process, env, {n: free[p] for n, p in declared.items()}, log)
    try:
        wait_for(running.ready, 30, f"the sidecar ready (its log: {log})")
    except AssertionError:
        process.kill()
        process.wait()
        raise
    return running


def events(log: Path, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") == name]


@pytest.mark.parametrize("stop", ["within the grace period", "killed mid-drain"])
def test_acknowledged_escalations_outlive_their_pod_on_its_claim(tmp_path: Path, stop: str) -> None:
    """With the sink down, every escalation the sidecar acknowledged is still on the
    claim after the pod is stopped (its drain giving up within the grace period, or
    cut short by SIGKILL); the next sidecar on that claim counts them as recovered
    and, once the sink is up, delivers each exactly once."""
    nats = NatsServer(tmp_path)  # its port chosen, nothing listening on it yet
    pod = injected_recipe(nats.url)
    assert pod.grace_seconds == 45
    configmaps, claims = tmp_path / "configmaps", tmp_path / "claims"
    (configmaps / "fraud-policy").mkdir(parents=True)
    policy = configmaps / "fraud-policy"
    write_policy(policy / "policy.yaml", policy_doc(temperature_artefact(policy / "cal.onnx")))
    spool = claims / f"hitl-spool-{POD}" / "spool"

    first = start(pod, claims, configmaps, tmp_path / "first")
    try:
        with RouterClient(first.env["HITL_LISTEN"]) as client:
            acknowledged = [
                client.route(ok(f"held-{i}", strength=0.3)).escalation_id
                for i in range(ESCALATIONS)
            ]
        assert all(acknowledged)
        grace = pod.grace_seconds if stop == "within the grace period" else 0.5
        outcome = first.stop_as_kubernetes_would(grace)
    finally:
        if first.process.poll() is None:
            first.process.kill()
            first.process.wait()
    assert outcome == ("exited" if stop == "within the grace period" else "killed")
    if outcome == "exited":
        assert first.process.returncode == 0
        (stopped,) = events(first.log, "forwarder.stopped_with_backlog")
        assert stopped["records"] == ESCALATIONS
    assert len(list(read_unacked(spool))) == ESCALATIONS  # on the claim, not lost

    second = start(pod, claims, configmaps, tmp_path / "second")
    try:
        assert second.scrape("hitl_spool_recovered_records") == ESCALATIONS
        nats.start()
        wait_for(lambda: not list(read_unacked(spool)), 30, "the recovered spool delivered")
        assert second.stop_as_kubernetes_would(pod.grace_seconds) == "exited"
        assert second.process.returncode == 0
        delivered = [m["escalation_id"] for m in nats.messages("HITL_FRAUD")]
    finally:
        if second.process.poll() is None:
            second.process.kill()
            second.process.wait()
        nats.stop()
    assert sorted(delivered) == sorted(acknowledged)  # each once: no loss, no duplicate
