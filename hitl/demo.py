"""The end-to-end demo on the embedded default (``make demo`` / ``hitl demo``).

Trains a classifier on scikit-learn's bundled digits data set, fits on a held-out
split the calibrator that cross-validated NLL selects and exports it, recommends
t_high and t_low with a Clopper-Pearson bound, writes a policy, starts the registry
and the review queue (SQLite each; the queue also serves the reviewers' web console
on a loopback port, whose address and sign-in token file the demo prints), proposes
the policy to the registry as an operator and approves it as a second person, starts
the sidecar fed by the registry (three separate processes), routes the test split
through Route over gRPC, reports outcomes, waits for the forwarder to deliver every
escalation, resolves a sample of the queue with the true labels as a stand-in
reviewer working through the console's JSON API (urllib and its bearer token),
exports the labelled set, and prints what happened. Needs the ``calibrate`` extra.
The feedback service runs beside them: the sidecar sends it its decisions and
outcomes, the review queue its resolutions, and the demo compiles a dataset from its
log and fits a calibrator on it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hitl_client.router import TIER_AUTOMATED, Reason, RouterClient, Tier, route_request
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.auth import hash_token, new_token
from sidecar.feedback.store import open_store as open_feedback_store
from sidecar.policy.signing import generate_key_pair
from sidecar.registry.client import RegistryClient, upload_policy_file
from sidecar.registry.model import Role
from sidecar.registry.store import open_store as open_registry_store
from sidecar.review.store import open_store as open_review_store

MODEL = "digits"
SEED = 20261121
TARGET_TIER1_ACCURACY = 0.98
TARGET_ASSISTED_ACCURACY = 0.80
CONFIDENCE_LEVEL = 0.95
AUDIT_SAMPLE_RATE = 0.05
REVIEWED_SHARE = 0.5  # of the queue, resolved by the stand-in reviewer
CONSOLE_TIMEOUT_SECONDS = 10.0  # one call of the stand-in reviewer to the console
EXIT_CODES: dict[str, int] = {}  # of the demo's server processes, by name


@dataclass(frozen=True)
class Splits:
    train_x: npt.NDArray[np.float64]
    train_y: npt.NDArray[np.int64]
    cal_x: npt.NDArray[np.float64]
    cal_y: npt.NDArray[np.int64]
    test_x: npt.NDArray[np.float64]
    test_y: npt.NDArray[np.int64]


def run_demo(workdir: Path) -> int:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    print(f"== hitl demo: everything below is written to {workdir}/")
    splits = _load_digits()
    model = _train(splits)
    cal_logits = model.decision_function(splits.cal_x)
    test_logits = model.decision_function(splits.test_x)
    print(
        f"   classifier: logistic regression on digits, {len(splits.train_y)} train / "
        f"{len(splits.cal_y)} calibration / {len(splits.test_y)} test rows, "
        f"test accuracy {(test_logits.argmax(axis=1) == splits.test_y).mean():.3f}"
    )
    policy = _calibrate_and_write_policy(workdir, cal_logits, splits.cal_y)
    tokens = _registry_principals(workdir)
    reviewers = _review_principals(workdir)
    _feedback_principals(workdir)
    python = [sys.executable, "-m", "hitl"]
    keys = workdir / "keys"
    with ExitStack() as processes:
        registry_address = _start(
            processes, "registry",
            [*python, "registry", "serve", "--listen", "127.0.0.1:0",
             "--db", f"sqlite:{workdir / 'registry.db'}",
             "--signing-key", str(workdir / "keys" / "signing.key")],
            workdir, "registry",
        )  # fmt: skip
        approval = _propose_and_approve(workdir, registry_address, tokens)
        feedback_address = _start(
            processes, "feedback service",
            [*python, "feedback", "serve", "--listen", "127.0.0.1:0",
             "--db", f"sqlite:{workdir / 'feedback.db'}"],
            workdir, "feedback",
        )  # fmt: skip
        console = f"127.0.0.1:{_free_port()}"
        queue_address = _start(
            processes, "review queue",
            [*python, "review", "serve", "--listen", "127.0.0.1:0",
             "--db", f"sqlite:{workdir / 'review.db'}",
             "--feedback", feedback_address,
             "--feedback-token-file", str(keys / "review-feedback.token"),
             "--console-listen", console,
             "--console-secret-file", str(keys / "console.key")],
            workdir, "review",
        )  # fmt: skip
        console_url = f"http://{console}/"
        print(
            f"   review console: {console_url} (sign in as demo-reviewer with the token in "
            f"{keys / 'review-demo-reviewer.token'})",
            flush=True,  # while the demo runs, even when its output is a pipe
        )
        address = _start(
            processes, "sidecar",
            [*python, "sidecar", "--registry", registry_address,
             "--registry-token-file", str(workdir / "keys" / "sidecar.token"),
             "--registry-public-key", str(workdir / "keys" / "signing.pub"),
             "--listen", "127.0.0.1:0", "--state-dir", str(workdir / "state"),
             "--sink", f"review://{queue_address}",
             "--review-token-file", str(keys / "review-sidecar.token"),
             "--feedback", feedback_address,
             "--feedback-token-file", str(keys / "feedback-sidecar.token")],
            workdir, "sidecar",
        )  # fmt: skip
        summary = _route_test_split(address, test_logits, splits.test_y)
        review = _review(
            workdir, console_url, queue_address, summary.escalated, splits.test_y, reviewers
        )
        looped = _close_the_loop(workdir, len(splits.test_y), review.resolved)
    _report(workdir, policy, approval, summary, review, looped)
    return 0


def _load_digits() -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = data.data / 16.0, data.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.5, random_state=SEED, stratify=y
    )
    x_cal, x_test, y_cal, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=SEED, stratify=y_rest
    )
    return Splits(x_train, y_train, x_cal, y_cal, x_test, y_test)


def _train(splits: Splits) -> Any:
    from sklearn.linear_model import LogisticRegression

    # Default regularisation leaves the raw softmax under-confident (T < 1) on digits:
    # miscalibrated, as real models are, in the direction that wastes reviewer time.
    return LogisticRegression(C=1.0, max_iter=5000).fit(splits.train_x, splits.train_y)


def _calibrate_and_write_policy(
    workdir: Path, logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
) -> dict[str, Any]:
    from calibrators.data import check
    from calibrators.export import export_artefact
    from calibrators.fit import cross_fitted, fit_calibrator
    from calibrators.thresholds import recommend_thresholds

    data = check("digits calibration split", logits, labels, None, probabilities=False)
    fitted = fit_calibrator(data, target=TARGET_TIER1_ACCURACY, level=CONFIDENCE_LEVEL)
    exported = export_artefact(
        fitted, workdir / "calibrators" / "digits.onnx", labels=[f"digit-{i}" for i in range(10)]
    )
    # Bounded on cross-fitted confidences: each row calibrated by a fit that never saw it.
    calibrated = cross_fitted(data, fitted.method)
    report = recommend_thresholds(
        calibrated.max(axis=1),
        calibrated.argmax(axis=1) == labels,
        TARGET_TIER1_ACCURACY,
        TARGET_ASSISTED_ACCURACY,
        CONFIDENCE_LEVEL,
    )
    t_high, t_low = report.default.t_high, report.default.t_low
    assert fitted.selection is not None
    best, second = fitted.selection.scores[0], fitted.selection.scores[1]
    print(
        f"   calibrator: {best.method} (out of fold: {best.automated:.0%} automated at the "
        f"target, NLL {best.nll:.3f}; runner-up {second.method} {second.automated:.0%}, "
        f"{second.nll:.3f}), ECE {fitted.ece_before:.3f} -> {fitted.ece_after:.3f}"
    )
    print(
        f"   thresholds: t_high={t_high:.4f} (Tier-1 accuracy >= {TARGET_TIER1_ACCURACY} at "
        f"{CONFIDENCE_LEVEL:.0%} confidence; bound {report.default.tier1_lower_bound:.4f} on "
        f"{report.default.automated_share:.0%} automated, cross-fitted), t_low={t_low:.4f}"
    )
    policy = {
        "revision": 1,
        "issued_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "max_age_seconds": 86400,
        "models": {
            MODEL: {
                "calibrator": {
                    "path": "calibrators/digits.onnx",
                    "sha256": exported.sha256,
                    "version": exported.metadata.version,
                },
                "target_tier1_accuracy": TARGET_TIER1_ACCURACY,
                "thresholds": {"t_high": t_high, "t_low": t_low},
                # A business choice beside the statistics: cheques are held to more.
                "domains": {"bank-cheques": {"t_high": max(t_high, 0.995), "t_low": t_low}},
                "rules": [
                    {
                        "id": "large-amount",
                        "when": [{"field": "attributes.amount", "op": "gt", "value": 10000}],
                    },
                    {
                        "id": "flagged-sender",
                        "when": [
                            {
                                "field": "attributes.sender_status",
                                "op": "in",
                                "value": ["watchlist"],
                            }
                        ],
                    },
                ],
                "audit_sample_rate": AUDIT_SAMPLE_RATE,
            }
        },
    }
    (workdir / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    return policy


def _start(processes: ExitStack, name: str, command: list[str], workdir: Path, tag: str) -> str:
    """Start a hitl server process, stopped with SIGTERM when processes closes (its exit
    code kept in EXIT_CODES); return its address once it is SERVING."""
    port_file = workdir / f"{tag}.addr"
    with (workdir / f"{tag}.log").open("wb") as log:
        process = subprocess.Popen(
            [*command, "--port-file", str(port_file)], stdout=log, stderr=subprocess.STDOUT
        )
    processes.callback(_stop, name, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}; see {workdir / tag}.log")
        if port_file.exists() and _serving(port_file.read_text()):
            print(f"   {name}: pid {process.pid} serving on {port_file.read_text()}")
            return port_file.read_text()
        time.sleep(0.1)
    raise SystemExit(f"{name} did not become SERVING within 60 s; see {workdir / tag}.log")


def _free_port() -> int:
    """A loopback port free at this moment, for the console: it is printed before the
    review queue could report one it chose itself (the queue binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(name: str, process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    EXIT_CODES[name] = process.wait(timeout=30)
    print(f"   {name} stopped on SIGTERM with exit code {EXIT_CODES[name]}")


def _serving(address: str) -> bool:
    """Whether the server at address reports SERVING (every hitl server has health)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _registry_principals(workdir: Path) -> dict[str, str]:
    """A signing key pair and three principals: an operator who proposes, an approver
    who approves, and the sidecar (what ``hitl registry keygen`` and ``hitl registry
    principal add`` do). Returns their tokens; the sidecar's is also written to a file."""
    keys = workdir / "keys"
    generate_key_pair(keys / "signing.key", keys / "signing.pub")
    roles = {"ops-alice": Role.OPERATOR, "risk-bob": Role.APPROVER, "sidecar": Role.SIDECAR}
    tokens = {name: new_token() for name in roles}
    store = open_registry_store(f"sqlite:{workdir / 'registry.db'}")
    try:
        for name, role in roles.items():
            store.add_principal(name, frozenset({role}), hash_token(tokens[name]), "", time.time())
    finally:
        store.close()
    (keys / "sidecar.token").write_text(tokens["sidecar"])
    return tokens


def _review_principals(workdir: Path) -> dict[str, str]:
    """The review queue's principals (what ``hitl review principal add`` does): the
    sidecar that submits, a reviewer, and the exporter of labelled data. Returns their
    tokens; the sidecar's and the reviewer's (to sign in to the console) are also
    written to files, beside the key that signs the console's sessions."""
    roles = {
        "sidecar": {"sidecar"},
        "demo-reviewer": {"reviewer", "viewer"},  # a viewer too: it waits on the queue
        "exporter": {"exporter"},
    }
    tokens = {name: new_token() for name in roles}
    store = open_review_store(f"sqlite:{workdir / 'review.db'}")
    try:
        for name, held in roles.items():
            store.add_principal(name, frozenset(held), hash_token(tokens[name]), "", time.time())
    finally:
        store.close()
    keys = workdir / "keys"
    (keys / "review-sidecar.token").write_text(tokens["sidecar"])
    (keys / "review-demo-reviewer.token").write_text(tokens["demo-reviewer"])
    (keys / "console.key").write_text(secrets.token_urlsafe(48))  # 64 characters
    return tokens


def _feedback_principals(workdir: Path) -> None:
    """The feedback service's principals (what ``hitl feedback principal add`` does):
    the sidecar that sends decisions and outcomes, and the review queue that sends
    resolutions; their tokens go to files."""
    files = {"sidecar": "feedback-sidecar.token", "review": "review-feedback.token"}
    store = open_feedback_store(f"sqlite:{workdir / 'feedback.db'}")
    try:
        for role, file in files.items():
            token = new_token()
            store.add_principal(f"demo-{role}", frozenset({role}), hash_token(token), "", 0.0)
            (workdir / "keys" / file).write_text(token)
    finally:
        store.close()


@dataclass(frozen=True)
class Looped:
    counts: dict[str, int]
    dataset: dict[str, Any]
    temperature: float
    ece: float


def _close_the_loop(workdir: Path, routed: int, reviewed: int) -> Looped:
    """Wait until the feedback service holds every outcome and every resolution, then
    compile a dataset from its log and fit a calibrator on it (as an operator would,
    with ``hitl feedback dataset build`` and ``hitl calibrate fit``)."""
    db = f"sqlite:{workdir / 'feedback.db'}"
    started = time.monotonic()
    while True:
        store = open_feedback_store(db)
        try:
            counts = store.counts()
        finally:
            store.close()
        if counts.get("OUTCOME", 0) >= routed and counts.get("REVIEW", 0) >= reviewed:
            break
        if time.monotonic() - started > 60:
            raise SystemExit(f"the feedback service holds {counts} after 60 s")
        time.sleep(0.2)
    out = workdir / "datasets"
    built = subprocess.run(
        [sys.executable, "-m", "hitl", "feedback", "dataset", "build", "--model", MODEL,
         "--out", str(out), "--db", db],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    dataset = json.loads(built.stdout)
    fit = workdir / "fit-from-feedback.json"
    subprocess.run(
        [sys.executable, "-m", "hitl", "calibrate", "fit", "--method", "temperature",
         "--data", str(out / f"{dataset['id']}.jsonl"), "--out", str(fit)],
        check=True, capture_output=True,
    )  # fmt: skip
    fitted = json.loads(fit.read_text())
    return Looped(counts, dataset, fitted["parameters"]["temperature"], fitted["ece_after"])


@dataclass(frozen=True)
class Approval:
    revision: int
    proposal: int
    proposed_by: str
    approved_by: str
    widening: list[str]


def _propose_and_approve(workdir: Path, address: str, tokens: dict[str, str]) -> Approval:
    """The policy file proposed by the operator (its calibrator uploaded), then approved
    by the approver: a first policy widens automation, so it needs both."""
    with RegistryClient(address, tokens["ops-alice"]) as ops:
        message = upload_policy_file(ops, workdir / "policy.yaml")
        proposal = ops.propose(message, "demo: thresholds from the calibration split", 0)
    with RegistryClient(address, tokens["risk-bob"]) as risk:
        approved = risk.approve(proposal.id, "Clopper-Pearson bound checked")
    print(
        f"   registry: proposal {proposal.id} by ops-alice "
        f"({len(proposal.widening)} widening change: {proposal.widening[0]}), "
        f"approved by risk-bob -> revision {approved.revision}, signed"
    )
    return Approval(
        approved.revision, proposal.id, "ops-alice", "risk-bob", list(proposal.widening)
    )


@dataclass(frozen=True)
class Summary:
    tiers: Counter[str]
    reasons: Counter[str]
    automated_correct: int
    automated: int
    escalated: int
    outcomes_matched: int
    latencies_ms: list[float]


def _route_test_split(
    address: str, logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]
) -> Summary:
    tiers: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    automated = automated_correct = escalated = matched = 0
    latencies: list[float] = []
    with RouterClient(address) as client:
        for i, (row, label) in enumerate(zip(logits, labels, strict=True)):
            # A few business attributes, so the rules and a domain override take part.
            attributes = {"amount": 25000.0} if i % 25 == 0 else {"amount": float(10 * i)}
            domain = "bank-cheques" if i % 10 == 3 else ""
            request = route_request(
                f"demo-{i:05d}",
                MODEL,
                row,
                model_version="logreg-1",
                domain=domain,
                numeric_attributes=attributes,
                input_ref=f"digits://test/{i}",
            )
            start = time.perf_counter()
            response = client.route(request)
            latencies.append((time.perf_counter() - start) * 1000.0)
            tiers[Tier.Name(response.tier)] += 1
            reasons[Reason.Name(response.reason)] += 1
            escalated += bool(response.escalation_id)
            if response.tier == TIER_AUTOMATED:
                automated += 1
                automated_correct += response.predicted_class == label
            outcome = client.record_outcome(
                pb.OutcomeRequest(
                    request_id=request.request_id, model=MODEL, true_class=int(label), source="demo"
                )
            )
            matched += outcome.matched
    return Summary(tiers, reasons, automated_correct, automated, escalated, matched, latencies)


@dataclass(frozen=True)
class Reviewed:
    queued: int
    resolved: int
    overridden: int
    exported: int
    export: Path
    delivery_seconds: float


def _review(
    workdir: Path,
    console: str,
    address: str,
    escalated: int,
    labels: npt.NDArray[np.int64],
    tokens: dict[str, str],
) -> Reviewed:
    """Wait for the forwarder to deliver every escalation, resolve a share of the
    queue through the console's JSON API as a stand-in reviewer who knows the true
    labels, export the labelled set over gRPC: each as its own principal."""
    from calibrators.data import load_dataset

    api = ConsoleApi(console, tokens["demo-reviewer"])
    started = time.monotonic()
    while (queued := len(api.call("GET", "/api/items?limit=1000")["items"])) < escalated:
        if time.monotonic() - started > 60:
            raise SystemExit(f"only {queued} of {escalated} escalations reached the queue")
        time.sleep(0.05)
    delivery = time.monotonic() - started
    overridden = 0
    resolved = round(queued * REVIEWED_SHARE)
    for _ in range(resolved):
        item = api.call("POST", "/api/claim", {})
        shown = time.monotonic()
        verdict = stand_in_verdict(item, labels)
        overridden += verdict["verdict"] == "OVERRIDE"
        verdict["time_to_label_seconds"] = time.monotonic() - shown
        escalation_id = urllib.parse.quote(item["escalation_id"], safe="")
        api.call("POST", f"/api/items/{escalation_id}/resolve", verdict)
    export = workdir / "labelled.jsonl"
    subprocess.run(
        [sys.executable, "-m", "hitl", "review", "export", "--target", address,
         "--out", str(export)],
        check=True, stdout=subprocess.DEVNULL,
        env={**os.environ, "HITL_REVIEW_TOKEN": tokens["exporter"]},
    )  # fmt: skip
    exported = len(load_dataset(export).labels)  # what hitl calibrate fit would read
    return Reviewed(queued, resolved, overridden, exported, export, delivery)


STAND_IN = "hitl demo's stand-in reviewer, through the console's JSON API"


def stand_in_verdict(item: dict[str, Any], labels: npt.NDArray[np.int64]) -> dict[str, Any]:
    """The resolve call's body for a claimed item (as ``POST /api/claim`` answered it):
    ACCEPT when the model's class is the true label, else OVERRIDE with the true one;
    with the evidence of what the stand-in reviewer was shown. Pure."""
    e = item["escalation"]
    truth = int(labels[int(e["request_id"].removeprefix("demo-"))])
    evidence = {
        "reviewer": STAND_IN,
        "shown_by": "POST /api/claim",
        "escalation_id": item["escalation_id"],
        "input_ref": e["input_ref"],
        "predicted_class": e["predicted_class"],
        "predicted_label": e["predicted_label"],
        "calibrated_confidence": e["calibrated_confidence"],
        "tier": e["tier"],
        "reason": e["reason"],
        "rule_id": e["rule_id"],
        "time_left_seconds": item["time_left_seconds"],
        "truth_from": "the digits test split's label",
    }
    if truth == e["predicted_class"]:
        return {"verdict": "ACCEPT", "rationale": "agrees", "evidence": evidence}
    return {
        "verdict": "OVERRIDE",
        "corrected_class": truth,
        "corrected_label": f"digit-{truth}",
        "rationale": "the digit is another one",
        "evidence": evidence,
    }


class ConsoleApi:
    """The review console's JSON API as the stand-in reviewer calls it: urllib, its
    bearer token, no proxy (the console is on loopback). Any error, HTTP or not, ends
    the demo with SystemExit naming the call, the status and the console's message."""

    def __init__(self, url: str, token: str) -> None:
        if not url.startswith("http://"):
            raise ValueError(f"the console's URL must be http://, got {url!r}")
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        # http:// only (checked in __init__), so no file: or custom scheme reaches urllib.
        request = urllib.request.Request(self._url + path, data, headers, method=method)  # noqa: S310
        what = f"review console: {method} {path}"
        try:
            with self._opener.open(request, timeout=CONSOLE_TIMEOUT_SECONDS) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{what} answered {exc.code}: {_error_message(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise SystemExit(f"{what} failed: {reason}") from None
        except ValueError as exc:
            raise SystemExit(f"{what} answered something that is not JSON: {exc}") from None
        if not isinstance(answer, dict):
            raise SystemExit(f"{what} answered {type(answer).__name__}, not a JSON object")
        return answer


def _error_message(error: urllib.error.HTTPError) -> str:
    """The console's message for an HTTP error (``{"error": {"message": ...}}``), else
    the body as it came, else the reason phrase."""
    with error:
        raw = error.read().decode("utf-8", "replace")
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if isinstance(message, str) and message:
        return message
    return raw.strip()[:500] or str(error.reason)


def _report(
    workdir: Path,
    policy: dict[str, Any],
    approval: Approval,
    summary: Summary,
    review: Reviewed,
    looped: Looped,
) -> None:
    total = sum(summary.tiers.values())
    state = workdir / "state"
    print(f"\n== routed {total} held-out digits through Route over gRPC")
    for tier in ("TIER_AUTOMATED", "TIER_HUMAN_ASSISTED", "TIER_HUMAN_PRIMARY"):
        n = summary.tiers.get(tier, 0)
        print(f"   {tier:<22} {n:5d}  {n / total:6.1%}")
    print(
        "   reasons: "
        + ", ".join(f"{k.removeprefix('REASON_')}={v}" for k, v in sorted(summary.reasons.items()))
    )
    if summary.automated:
        accuracy = summary.automated_correct / summary.automated
        target = policy["models"][MODEL]["target_tier1_accuracy"]
        verdict = "meets" if accuracy >= target else "MISSES"
        print(
            f"   Tier-1 accuracy: {accuracy:.4f} "
            f"({summary.automated_correct}/{summary.automated}), "
            f"{verdict} the policy's target {target}"
        )
    lat = np.array(summary.latencies_ms)
    print(
        f"   Route latency, one client, sequential: p50 {np.percentile(lat, 50):.2f} ms, "
        f"p99 {np.percentile(lat, 99):.2f} ms (escalations fsynced before the answer)"
    )
    print(f"   outcomes reported: {summary.outcomes_matched} joined with their decision")
    print("\n== the review queue")
    print(
        f"   escalations: {summary.escalated} answered with an escalation_id, "
        f"{review.queued} in the queue {review.delivery_seconds:.2f} s after the last Route"
    )
    print(
        f"   stand-in reviewer, through the console's JSON API: resolved {review.resolved}"
        f" (the most urgent first), {review.overridden} overrides of the model"
    )
    print(f"   labelled export: {review.exported} rows that hitl calibrate fit reads as is")
    print("\n== the feedback service")
    counts = looped.counts
    print(
        f"   log: {counts.get('DECISIONS', 0)} decisions (every escalated one and a 5 % sample"
        f" of the automated), {counts.get('OUTCOME', 0)} outcomes from RecordOutcome,"
        f" {counts.get('REVIEW', 0)} reviews from the queue"
    )
    dataset = looped.dataset
    sources = ", ".join(f"{k} {v}" for k, v in dataset["per_label_source"].items())
    print(
        f"   dataset {dataset['id']}: {dataset['rows']} labelled decisions ({sources}),"
        f" {dataset['disagreements']} where outcome and review disagree"
    )
    print(
        f"   temperature fitted on it, each row weighted by its inverse inclusion"
        f" probability: T = {looped.temperature:.3f}, weighted ECE after {looped.ece:.4f}"
        f" ({workdir / 'fit-from-feedback.json'})"
    )
    print("\n== where things are")
    print(
        f"   policy:       {workdir / 'policy.yaml'} -> registry revision {approval.revision} "
        f"({workdir / 'registry.db'}); the sidecar's signed copy in {state / 'policy'}"
    )
    print(f"   calibrator:   {workdir / 'calibrators' / 'digits.onnx'}")
    print(
        f"   audit log:    {state / 'audit.jsonl'} ({_count_lines(state / 'audit.jsonl')} records)"
    )
    print(f"   review queue: {workdir / 'review.db'} (SQLite)")
    print(f"   feedback log: {workdir / 'feedback.db'} (SQLite)")
    print(f"   dataset:      {workdir / 'datasets' / (looped.dataset['id'] + '.jsonl')}")
    print(f"   labelled set: {review.export}")
    print(
        f"   logs:         {workdir / 'sidecar.log'}, {workdir / 'review.log'}, "
        f"{workdir / 'registry.log'}, {workdir / 'feedback.log'}"
    )
    (workdir / "summary.json").write_text(
        json.dumps(
            {
                "routed": total,
                "tiers": dict(summary.tiers),
                "reasons": dict(summary.reasons),
                "tier1_accuracy": summary.automated_correct / summary.automated
                if summary.automated
                else None,
                "target_tier1_accuracy": policy["models"][MODEL]["target_tier1_accuracy"],
                "escalated": summary.escalated,
                "escalations_in_queue": review.queued,
                "reviewed": review.resolved,
                "overridden": review.overridden,
                "exported": review.exported,
                "outcomes_matched": summary.outcomes_matched,
                "feedback_log": looped.counts,
                "dataset": looped.dataset["id"],
                "dataset_rows": looped.dataset["rows"],
                "dataset_temperature": looped.temperature,
                "route_p50_ms": float(np.percentile(lat, 50)),
                "route_p99_ms": float(np.percentile(lat, 99)),
                "policy_revision": approval.revision,
                "proposed_by": approval.proposed_by,
                "approved_by": approval.approved_by,
                "exit_codes": EXIT_CODES,
            },
            indent=2,
        )
    )


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)
