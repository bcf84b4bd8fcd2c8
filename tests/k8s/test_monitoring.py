"""The alert rules and the dashboard in k8s/monitoring: promtool checks and unit
tests, every metric name they use exists on the real scrape endpoints of a sidecar,
a review queue, a feedback service, a calibration monitor and an injector run here,
every alert links to its section of docs/runbooks.md, and the Prometheus Operator
objects in k8s/monitoring/operator carry the same rules and scrape the jobs the
rules name."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.feedback.client import outcome_event
from sidecar.injector.annotations import INJECT
from sidecar.injector.container import METRICS_PORT_NAME
from sidecar.registry.messages import policy_from_document
from sidecar.review.item import Verdict
from tests.artefacts import confident_logits, policy_doc, temperature_artefact, write_policy
from tests.certs import serving_pair
from tests.feedback_service import add_principals as add_feedback_principals
from tests.feedback_service import start as start_feedback
from tests.integration.conftest import hitl_command, start_review, start_sidecar, wait_for
from tests.k8s.manifests import K8S, build, find, kustomize_available, of_kind, selects
from tests.ports import free_port
from tests.registry import Registry, in_process, registry_policy, upload_artefact
from tests.unit.injector.pods import admission_review, pod

MONITORING = K8S / "monitoring"
OPERATOR = MONITORING / "operator"
ROOT = K8S.parent
RUNBOOKS = ROOT / "docs" / "runbooks.md"
# Where the docs site publishes docs/runbooks.md: mkdocs.yml's site_url when it has
# one, else the placeholder docs/runbooks.md names (the alerts' runbook_url base).
RUNBOOKS_URL = "https://hitl-sidecar.github.io/hitl/runbooks/"
RUNBOOK_PARTS = ("What it means", "Impact", "First checks", "Mitigation", "Escalation")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run does)",
)
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$model": ".*"}
METRIC = re.compile(r"\b(hitl_[a-z0-9_]+)\b")
DRIFT_WINDOW = 50
# What the sidecar's file policy and the registry's policy (the monitor's) add to the
# model: the drift guard pauses automation once its window is full of confident class
# 0 (far from the artefact's reference); the monitor judges Tier-1 accuracy and ECE
# against these limits and compares the experiment's arms.
CALIBRATION_POLICY: dict[str, Any] = {
    "target_tier1_accuracy": 0.99,
    "max_ece": 0.05,
    "drift": {"window": DRIFT_WINDOW, "psi_alarm": 0.25, "action": "pause_automation"},
    "experiment": {
        "name": "stricter",
        "arms": [
            {"name": "control", "weight": 50},
            {"name": "strict", "weight": 50, "thresholds": {"t_high": 0.95, "t_low": 0.5}},
        ],
    },
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def alert_expressions() -> list[str]:
    return [rule["expr"] for rule in alert_rules()]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return document


def dashboard_expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    """promtool check rules accepts alerts.yaml."""
    done = promtool("check", "rules", str(MONITORING / "alerts.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_alert_rules_unit_tests() -> None:
    """promtool test rules passes alerts.test.yaml (each alert fires, or stays quiet,
    as its tests say, with its rendered summary)."""
    done = promtool("test", "rules", str(MONITORING / "alerts.test.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts.test.yaml").read_text()))
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts == tested, f"alerts without a test: {sorted(alerts - tested)}"


def slugify(heading: str) -> str:
    """The anchor mkdocs (its toc extension) gives a heading."""
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def runbook_sections() -> dict[str, str]:
    """docs/runbooks.md's level-2 sections by their anchor (as mkdocs makes it)."""
    sections: dict[str, str] = {}
    for chunk in re.split(r"^## ", RUNBOOKS.read_text(), flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        sections[slugify(heading)] = body
    return sections


def test_every_alert_links_to_its_runbook() -> None:
    """Each alert's runbook_url is the docs site's runbooks page at the alert's own
    section, which exists and says what the alert means, its impact, what to check
    first, how to mitigate and when to escalate; and no section outlives its alert."""
    mkdocs = re.sub(r"!!python\S*", "", (ROOT / "mkdocs.yml").read_text())  # tags aside
    site_url = yaml.safe_load(mkdocs).get("site_url")
    base = f"{site_url.rstrip('/')}/runbooks/" if site_url else RUNBOOKS_URL
    sections = runbook_sections()
    anchors = set()
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        page, _, anchor = url.partition("#")
        assert page == base, f"{rule['alert']}: {url}"
        assert anchor == slugify(rule["alert"]), f"{rule['alert']}: {url}"
        assert anchor in sections, f"{rule['alert']}: no section in docs/runbooks.md"
        for part in RUNBOOK_PARTS:
            assert f"**{part}**" in sections[anchor], f"{rule['alert']}: no {part}"
        anchors.add(anchor)
    assert {a for a in sections if a.startswith("hitl")} == anchors


def test_prometheus_rule_is_alerts_yaml() -> None:
    """operator/prometheusrule.yaml is alerts.yaml under a PrometheusRule's spec, as
    its header says to generate it (so its groups are alerts.yaml's)."""
    rule_text = (OPERATOR / "prometheusrule.yaml").read_text()
    alerts_text = (MONITORING / "alerts.yaml").read_text()
    header, spec, _ = rule_text.partition("\nspec:\n")
    assert spec, "prometheusrule.yaml has no spec"
    body = alerts_text[alerts_text.index("\ngroups:\n") + 1 :]
    indented = "".join(f"  {line}" if line.strip() else line
                       for line in body.splitlines(keepends=True))  # fmt: skip
    assert rule_text == header + spec + indented, (
        "prometheusrule.yaml differs from alerts.yaml: regenerate it as its header says"
    )
    document = yaml.safe_load(rule_text)
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["spec"]["groups"] == yaml.safe_load(alerts_text)["groups"]


@pytest.mark.skipif(not kustomize_available(), reason="kubectl is not installed")
def test_operator_objects_scrape_the_jobs_the_rules_name() -> None:
    """The PodMonitor finds injected pods (the opt-in label) on the port the injector
    names, in every namespace; each ServiceMonitor selects one Service of the base,
    on a port it has; together they give the job names the rules use."""
    operator = build("monitoring/operator")
    installed = build("overlays/production")
    (pod_monitor,) = of_kind(operator, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["selector"] == {"matchLabels": {INJECT: "true"}}
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == METRICS_PORT_NAME
    (job,) = [r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    jobs = {job}
    for monitor in of_kind(operator, "ServiceMonitor"):
        services = [s for s in of_kind(installed, "Service")
                    if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]  # fmt: skip
        assert len(services) == 1, monitor["metadata"]["name"]
        (service,) = services
        assert service["metadata"]["namespace"] == monitor["metadata"]["namespace"]
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        jobs.add(service["metadata"]["name"])  # the Operator's job: the Service's name
    named = {j for r in alert_rules() for j in re.findall(r'job=~?"([^"]+)"', r["expr"])}
    assert {j for j in named if "*" not in j} <= jobs
    assert all(re.fullmatch(pattern, j) for pattern in named - jobs for j in jobs)
    for deployment in of_kind(installed, "Deployment"):
        name = deployment["metadata"]["name"]
        assert name in jobs, f"{name} has a Service but no ServiceMonitor"
        find(installed, "Service", name)


def test_dashboard_is_grafana_json() -> None:
    """The dashboard parses, has a uid and unique panel ids, and every panel queries
    the Prometheus data source variable."""
    board = dashboard()
    assert board["uid"] == "hitl-sidecar"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    queries = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in queries)
    names = {v["name"] for v in board["templating"]["list"]}
    assert names == {"datasource", "namespace", "model"}
    titles = " ".join(p["title"] for p in board["panels"])
    routing = ("tier", "latency", "Fallback", "Spool", "Policy", "deadline", "Rejected")
    calibration = ("Tier-1 accuracy", "ECE", "PSI", "paused", "p-value", "Override rate")
    for signal in routing + calibration:
        assert signal.lower() in titles.lower(), signal


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query, its Grafana variables filled in, is PromQL promtool
    accepts (as a recording rule)."""
    expressions = dashboard_expressions()
    for variable, value in GRAFANA_VARIABLES.items():
        expressions = [e.replace(variable, value) for e in expressions]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(expressions)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[set[str]]:
    """Metric names on the scrape endpoints of a review queue, a feedback service, a
    sidecar forwarding to both (whose drift guard pauses automation, so it falls back,
    and with a rejected revision), a calibration monitor that finds the sidecar's
    automated answers wanting and tightens the registry's policy, and an injector,
    after each has done what makes its series appear."""
    review_metrics, sidecar_metrics, injector_metrics = free_port(), free_port(), free_port()
    feedback_metrics, monitor_metrics = free_port(), free_port()
    feedback_db = f"sqlite:{tmp_path / 'feedback.db'}"
    feedback_tokens = add_feedback_principals(
        feedback_db, {"sidecar-1": ("sidecar",), "app": ("client",)}
    )
    (tmp_path / "feedback-sidecar.token").write_text(feedback_tokens["sidecar-1"])
    (tmp_path / "registry").mkdir()
    with ExitStack() as stack:
        registry = stack.enter_context(in_process("sqlite", tmp_path / "registry"))
        monitor = _start_monitor(registry, feedback_db, monitor_metrics)
        stack.callback(_kill, monitor)
        feedback = start_feedback(
            tmp_path / "feedback", feedback_db, feedback_tokens,
            "--metrics-addr", f"127.0.0.1:{feedback_metrics}",
            "--join-window", "0.5", "--sweep-seconds", "0.2",
        )  # fmt: skip
        stack.callback(_kill, feedback.process)
        review = start_review(
            tmp_path / "review",
            "--metrics-addr", f"127.0.0.1:{review_metrics}",
            "--sla", "HUMAN_PRIMARY=1,HUMAN_ASSISTED=1,AUTOMATED=1", "--sweep-seconds", "0.2",
        )  # fmt: skip
        stack.callback(_kill, review.process)
        policy = policy_doc(temperature_artefact(tmp_path / "cal.onnx"), **CALIBRATION_POLICY)
        # Revision 100: the file stands for the registry's policy, whose head the
        # monitor's tightening moves to 2; decisions of a revision before the model's
        # last change would no longer be judged.
        policy |= {"revision": 100, "issued_at": _rfc3339(time.time()), "max_age_seconds": 3600}
        write_policy(tmp_path / "policy.yaml", policy)
        sidecar = start_sidecar(
            tmp_path, tmp_path / "policy.yaml",
            "--metrics-addr", f"127.0.0.1:{sidecar_metrics}", *review.sink(),
            "--feedback", feedback.address, "--decision-sample", "1",
            "--feedback-token-file", str(tmp_path / "feedback-sidecar.token"),
        )  # fmt: skip
        stack.callback(_kill, sidecar.process)
        pki = serving_pair(tmp_path / "tls", "ca")
        port_file = tmp_path / "injector.addr"
        injector = subprocess.Popen(
            hitl_command(
                "injector", "serve", "--listen", "127.0.0.1:0", "--port-file", str(port_file),
                "--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--image", "hitl:test",
                "--registry", "r:1", "--metrics-addr", f"127.0.0.1:{injector_metrics}",
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        stack.callback(_kill, injector)
        sidecar.wait_serving()
        with sidecar.client() as client:
            for i in range(DRIFT_WINDOW - 1):  # automated, each recorded for the loop
                client.route(_request(f"auto-{i}"))
            client.route(_request("order-1"))  # the window is full and far from the
            client.route(_request("order-2"))  # reference: both fall back and escalate
        (tmp_path / "policy.yaml").write_text("revision: [not, a, policy]\n")
        with review.client() as queue:
            wait_for(lambda: len(queue.list_items(None, "", "", 10)) == 2, 10, "escalations")
        with review.client("alice") as queue:
            item = queue.claim()  # one resolved, one left to go overdue
            queue.resolve(item.escalation.escalation_id, Verdict.ACCEPT)
        wait_for(port_file.exists, 30, "the injector")
        context = ssl.create_default_context(cadata=pki.ca_pem.decode())
        urllib.request.urlopen(
            urllib.request.Request(
                f"https://localhost:{port_file.read_text().rpartition(':')[2]}/mutate",
                data=json.dumps(admission_review(pod())).encode(),
                headers={"Content-Type": "application/json"},
            ),
            context=context,
            timeout=10,
        ).read()
        wait_for(lambda: "overdue_total" in _scrape(review_metrics), 10, "an overdue item")
        wait_for(lambda: "rejected_total" in _scrape(sidecar_metrics), 5, "a rejection")
        sent = DRIFT_WINDOW - 1  # the automated decisions reach the feedback service
        wait_for(lambda: _total(sidecar_metrics, "decisions_sent") >= sent, 10, "decisions")
        with feedback.client("app") as app:  # one rejected, one never attributed
            app.record_batch([fpb.FeedbackEvent(feedback_id="x"), _orphan()])
            app.record(outcome_event("o-1", "order-1", "m", true_class=0))  # labels: right,
            app.record(outcome_event("o-2", "auto-0", "m", true_class=1))  # automated wrong
        wait_for(lambda: "dead_lettered_total" in _scrape(feedback_metrics), 10, "a dead letter")
        wait_for(lambda: "override_rate" in _scrape(feedback_metrics), 10, "the loop's health")
        wait_for(lambda: "loop_latency" in _scrape(feedback_metrics), 10, "the loop's latency")
        for port, task in ((feedback_metrics, "feedback-sweep"), (review_metrics, "review-sweep")):
            wait_for(lambda p=port, t=task: f'task="{t}"' in _scrape(p), 10, f"{task}'s metrics")
        judged = ('value="upper"', "override_rate", "experiment_p_value", "tightenings_total")
        wait_for(
            lambda: all(name in _scrape(monitor_metrics) for name in judged),
            10,
            "the monitor's judgement of the labelled decisions and a tightening",
        )
        endpoints = (review_metrics, sidecar_metrics, injector_metrics, feedback_metrics)
        text = "".join(_scrape(p) for p in (*endpoints, monitor_metrics))
        yield {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line.startswith("hitl_")}  # fmt: skip


def _start_monitor(registry: Registry, feedback_db: str, port: int) -> subprocess.Popen[bytes]:
    """``hitl monitor serve`` on the feedback database, as alice (an operator) of a
    registry whose head is CALIBRATION_POLICY's model 'm' (proposed by alice, approved
    by bob); it checks every 0.5 s and judges from the first recorded decision on."""
    sha = upload_artefact(registry, registry.workdir / "cal.onnx")
    with registry.client("alice") as alice, registry.client("bob") as bob:
        doc = registry_policy(sha, **CALIBRATION_POLICY)
        bob.approve(alice.propose(policy_from_document(doc), "monitored", 0).id, "ok")
    with (registry.workdir / "monitor.log").open("ab") as log:
        return subprocess.Popen(
            hitl_command(
                "monitor", "serve", "--db", feedback_db, "--registry", registry.address,
                "--registry-token-file", str(registry.token_file("alice")),
                "--interval-seconds", "0.5", "--metrics-addr", f"127.0.0.1:{port}",
                "--min-recorded", "1", "--min-labels", "1",
            ),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _request(request_id: str) -> Any:
    from hitl_client.router import route_request

    return route_request(request_id, "m", confident_logits(0))


def _orphan() -> Any:
    return fpb.FeedbackEvent(
        feedback_id="orphan",
        request_id="never-decided",
        model="m",
        type=fpb.FEEDBACK_RATING,
        rating=0.5,
    )


def _total(port: int, name: str) -> float:
    """The sum of hitl_<name>_total's samples on port's scrape (0 when it has none)."""
    prefix = f"hitl_{name}_total"
    return sum(
        float(line.rpartition(" ")[2])
        for line in _scrape(port).splitlines()
        if line.startswith((prefix + "{", prefix + " "))
    )


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            return str(page.read().decode())
    except OSError:
        return ""


@pytest.mark.integration
def test_every_metric_the_alerts_and_dashboard_use_is_exported(scraped: set[str]) -> None:
    """Each hitl_* name in alerts.yaml and dashboard.json is on a real scrape endpoint."""
    used = {name for expr in alert_expressions() + dashboard_expressions()
            for name in METRIC.findall(expr)}  # fmt: skip
    # The Label Studio bridge needs a Label Studio server: tests/integration/
    # test_labelstudio.py scrapes its hitl_labelstudio_* names.
    missing = sorted(name for name in used - scraped if not name.startswith("hitl_labelstudio_"))
    assert not missing, f"not exported by any process: {missing}; exported: {sorted(scraped)}"
    assert len(used) >= 20
