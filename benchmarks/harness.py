"""The benchmarks' shared harness: the benchmark's calibrator, policy and request mix,
and the processes a run starts (sidecar, do-nothing floor, review queue, OTLP
receiver, registry), each waited for until it serves and measured by its CPU.

Stand-ins for services on other machines (the review queue, the OTLP receiver) run
under the idle scheduling class (SCHED_IDLE), so they use a core only when nothing
else wants it, and the queue keeps its database in /dev/shm, so its commits do not
contend with the spool's fsyncs for this disk."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks import loadgen
from benchmarks.policy_swapper import Swapper
from benchmarks.registry_admin import MODEL, Changes, prepare_registry
from hitl_client.router import route_request
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.escalation.spool import read_unacked

CLASSES = 10
SEED = 7
SHM = Path("/dev/shm")  # noqa: S108 (only mkdtemp's private directories go there)
SETTLE_SECONDS = 2.0  # between phases, so one phase's backlog does not bleed into the next


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    address: str

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children (the sidecar's span-export child)."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float, float]:
        """CPU seconds of the main thread (the event loop), of the process's other
        threads, and of its children."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        main, process = _cpu_ticks(f"{pid}/task/{pid}"), _cpu_ticks(str(pid))
        tick = os.sysconf("SC_CLK_TCK")
        return main / tick, (process - main) / tick, sum(map(_cpu_ticks, children)) / tick

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _cpu_ticks(pid: str) -> int:
    """User and system ticks of /proc/<pid>/stat (pid may be "<pid>/task/<tid>")."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # a child that has just exited
        return 0
    return int(fields[11]) + int(fields[12])


@dataclass
class Servers:
    """The sidecar on the benchmark's policy file, as the benchmarks run it, the floor
    beside it, and the stand-ins it talks to."""

    sidecar: Proc
    floor: Proc
    sink: Proc
    review: Proc
    review_db: Path

    def stop(self) -> None:
        for proc in (self.sidecar, self.floor, self.sink, self.review):
            proc.stop()
        shutil.rmtree(self.review_db.parent, ignore_errors=True)


def start_servers(workdir: Path) -> Servers:
    """``Servers`` for the policy ``prepare`` wrote in workdir; the sidecar serves once
    ``wait_serving`` returns."""
    sink = start_sink(workdir)
    review, review_db = start_review(workdir)
    sidecar = start_sidecar(workdir, sink, review, ["--policy", str(workdir / "policy.yaml")])
    return Servers(sidecar, start_floor(workdir), sink, review, review_db)


def phase_seconds(text: str) -> float:
    """An argparse type: the length of a measured phase, 1 to 600 s."""
    seconds = float(text)
    if not 1.0 <= seconds <= 600.0:
        raise argparse.ArgumentTypeError(f"1 to 600 seconds, not {text}")
    return seconds


def phase(
    proc: Proc, rate: float, seconds: float, payloads: list[bytes], workers: int, tag: str
) -> tuple[loadgen.LoadResult, dict[str, Any]]:
    """Open-loop unary Route load on proc; the calls and their figures, with the
    server's CPU per call (its children's included)."""
    cpu = proc.cpu_seconds()
    result = loadgen.run_load(proc.address, rate, seconds, payloads, workers, tag)
    return result, {
        **loadgen.percentiles(result.latencies_ms),
        "errors": result.errors,
        "sent": result.sent,
        "requested_rate": result.requested_rate,
        "achieved_rate": result.achieved_rate,
        "cpu_us_per_request": (proc.cpu_seconds() - cpu) / max(result.sent, 1) * 1e6,
        "window": result.window,
        "escalated": loadgen.percentiles(result.latencies_ms[result.escalated]),
        "not_escalated": loadgen.percentiles(result.latencies_ms[~result.escalated]),
    }


def start(
    command: list[str],
    port_file: Path,
    log: Path,
    env: dict[str, str] | None = None,
    elsewhere: bool = False,
) -> Proc:
    """Start a process and wait for its port file. elsewhere: it stands in for a service
    on other machines, so it runs under SCHED_IDLE and uses the cores only when the
    sidecar and the load generators leave them idle. (At nice 19 it still took a core
    from them at times: with both stand-ins at nice 19 the sidecar's p99 was
    6.9 ms, under SCHED_IDLE 6.0 ms, medians of 6 interleaved rounds.)"""
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["chrt", "--idle", "0", *command] if elsewhere else command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{command[2]} did not start; see {log}")
        time.sleep(0.05)
    return Proc(process, port_file.read_text())


def prepare(workdir: Path) -> list[bytes]:
    """Fit a real calibrator, write a realistic policy, build the request mix."""
    from calibrators.data import check
    from calibrators.export import export_artefact
    from calibrators.fit import fit_calibrator

    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, CLASSES, 5000)
    logits = _logits(rng, labels)
    data = check("benchmark logits", logits, labels, None, probabilities=False)
    fitted = export_artefact(fit_calibrator(data, "temperature"), workdir / "bench.onnx")
    policy = {
        "revision": 1,
        "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "max_age_seconds": 86400,
        "models": {
            "bench": {
                "calibrator": {
                    "path": "bench.onnx",
                    "sha256": fitted.sha256,
                    "version": fitted.metadata.version,
                },
                "thresholds": {"t_high": 0.70, "t_low": 0.45},
                "domains": {
                    "eu": {"t_high": 0.74, "t_low": 0.5},
                    "us": {"t_high": 0.68, "t_low": 0.4},
                },
                "rules": [
                    {
                        "id": "large-amount",
                        "when": [{"field": "attributes.amount", "op": "gt", "value": 10000}],
                    },
                    {
                        "id": "sensitive-topic",
                        "when": [
                            {"field": "attributes.topic", "op": "in", "value": ["legal", "medical"]}
                        ],
                    },
                    {"id": "coin-flip", "when": [{"field": "margin", "op": "lt", "value": 0.02}]},
                ],
                "experiment": {
                    "name": "stricter",
                    "unit": "attributes.customer",
                    "arms": [
                        {"name": "control", "weight": 90},
                        {
                            "name": "strict",
                            "weight": 10,
                            "thresholds": {"t_high": 0.8, "t_low": 0.5},
                        },
                    ],
                },
                "audit_sample_rate": 0.05,
                "drift": {"window": 2000, "psi_alarm": 0.25, "action": "pause_automation"},
            }
        },
    }
    (workdir / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    mix = rng.integers(0, CLASSES, 2000)
    topics = ["billing", "shipping", "returns", "legal", "medical"]
    return [
        route_request(
            "template",
            "bench",
            row,
            model_version="v1",
            domain=["", "eu", "us"][i % 3],
            numeric_attributes={
                "amount": float(rng.choice([50.0, 900.0, 25000.0], p=[0.7, 0.28, 0.02]))
            },
            string_attributes={
                "topic": topics[int(rng.choice(5, p=[0.5, 0.3, 0.18, 0.01, 0.01]))],
                "customer": f"c{i % 500}",
            },
            input_ref=f"s3://bench/inputs/{i}",
        ).SerializeToString()
        for i, row in enumerate(_logits(rng, mix))
    ]


def fit_artefact(path: Path, seed: int) -> str:
    """Another temperature calibrator for the same classifier, fitted on a sample drawn
    with seed (another seed: another artefact, sha256 and version); returns its sha256."""
    from calibrators.data import check
    from calibrators.export import export_artefact
    from calibrators.fit import fit_calibrator

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, 5000)
    data = check("benchmark logits", _logits(rng, labels), labels, None, probabilities=False)
    return export_artefact(fit_calibrator(data, "temperature"), path).sha256


def _logits(rng: np.random.Generator, labels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Over-confident logits of a ~85 %-accurate classifier; with the policy's thresholds,
    rules and audit sample about 30 % of requests are escalated (the run reports it)."""
    logits = rng.normal(0.0, 1.5, size=(labels.shape[0], CLASSES))
    logits[np.arange(labels.shape[0]), labels] += rng.gamma(3.0, 2.0, labels.shape[0])
    return logits * 2.0


def escalated_share(address: str, payloads: list[bytes]) -> float:
    from hitl_client.router import RouterClient

    with RouterClient(address) as client:
        results = client.route_batch(
            [_with_id(p, f"probe-{i}") for i, p in enumerate(payloads[:1000])], timeout=30
        )
    return sum(bool(r.response.escalation_id) for r in results) / len(results)


def _with_id(payload: bytes, request_id: str) -> pb.RouteRequest:
    request = pb.RouteRequest.FromString(payload)
    request.request_id = request_id
    return request


def start_sink(workdir: Path) -> Proc:
    """The OTLP receiver the sidecar exports its spans to; it stands in for a
    collector on other machines."""
    return start(
        [sys.executable, "-m", "benchmarks.otlp_sink", "--port-file", str(workdir / "otlp.addr")],
        workdir / "otlp.addr",
        workdir / "otlp.log",
        elsewhere=True,
    )


REVIEW_TOKEN = "review-sidecar.token"  # noqa: S105 (a file name in the workdir, no secret)


def start_sidecar(
    workdir: Path,
    sink: Proc,
    review: Proc,
    policy_args: list[str],
    env: dict[str, str] | None = None,
) -> Proc:
    """The sidecar as the benchmark runs it (spool fsync on, spans to sink,
    escalations to review); env overrides its settings. It serves once
    ``wait_serving`` returns."""
    return start(
        [sys.executable, "-m", "hitl", "sidecar", *policy_args, "--listen", "127.0.0.1:0",
         "--state-dir", str(workdir / "state"), "--port-file", str(workdir / "sidecar.addr"),
         "--sink", f"review://{review.address}",
         "--review-token-file", str(workdir / REVIEW_TOKEN)],
        workdir / "sidecar.addr",
        workdir / "sidecar.log",
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink.address}",
         "OTEL_EXPORTER_OTLP_INSECURE": "true", "HITL_SPOOL_FSYNC": "true", **(env or {})},
    )  # fmt: skip


def start_floor(workdir: Path) -> Proc:
    return start(
        [sys.executable, "-m", "benchmarks.floor", "--port-file", str(workdir / "floor.addr")],
        workdir / "floor.addr",
        workdir / "floor.log",
    )


def start_review(workdir: Path) -> tuple[Proc, Path]:
    """The review queue process and its database. The queue stands in for a service
    on other machines, so its database goes to memory where the machine has /dev/shm:
    on this disk its commits would share the filesystem journal with the spool's
    fsyncs, which in production they never do."""
    directory = Path(
        tempfile.mkdtemp(
            prefix="hitl-bench-review-",
            dir=SHM if SHM.is_dir() else None,
        )
    )
    database = directory / "review.db"
    review_principal(f"sqlite:{database}", workdir / REVIEW_TOKEN)
    review = start(
        [sys.executable, "-m", "hitl", "review", "serve", "--listen", "127.0.0.1:0",
         "--db", f"sqlite:{database}", "--port-file", str(workdir / "review.addr")],
        workdir / "review.addr", workdir / "review.log", elsewhere=True,
    )  # fmt: skip
    return review, database


def review_principal(db: str, token_file: Path) -> None:
    """The sidecar's principal in the review queue's database; its token in token_file."""
    from sidecar.auth import hash_token, new_token
    from sidecar.review.store import open_store

    token = new_token()
    store = open_store(db)
    try:
        store.add_principal("bench-sidecar", frozenset({"sidecar"}), hash_token(token), "", 0.0)
    finally:
        store.close()
    token_file.write_text(token)


def delivered(database: Path) -> int:
    """How many escalations reached the review queue; its database is then removed."""
    with sqlite3.connect(database) as db:
        count: int = db.execute("SELECT count(*) FROM review_items").fetchone()[0]
    shutil.rmtree(database.parent)
    return count


def start_registry(workdir: Path, interval: float) -> tuple[Proc, Swapper, list[str]]:
    """A registry process holding the benchmark's policy as revision 1 (proposed and
    approved) and a second calibrator; the swapper; the sidecar's flags for it."""
    setup = prepare_registry(workdir)
    registry = start(
        setup.serve_command(workdir / "registry.addr"),
        workdir / "registry.addr",
        workdir / "registry.log",
    )
    fit_artefact(workdir / "bench-b.onnx", SEED + 1)
    changes = Changes(registry.address, setup)
    base = changes.publish_file(workdir / "policy.yaml")
    calibrators = [base["models"][MODEL]["calibrator"], changes.upload(workdir / "bench-b.onnx")]
    flags = ["--registry", registry.address, "--registry-token-file", str(setup.sidecar_token_file),
             "--registry-public-key", str(setup.public_key)]  # fmt: skip
    return registry, Swapper(changes, base, calibrators, interval), flags


def drain(spool: Path, limit_seconds: float = 120.0) -> None:
    """Wait until the sidecar's forwarder has delivered every escalation in its spool
    (a throughput phase escalates tens of thousands, and the next phase would share
    the cores with their delivery), then SETTLE_SECONDS for the exporter and the
    audit log."""
    deadline = time.monotonic() + limit_seconds
    while next(read_unacked(spool), None) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(SETTLE_SECONDS)


def wait_serving(address: str) -> None:
    from hitl_client.router import RouterClient

    with RouterClient(address) as client:
        deadline = time.monotonic() + 60
        while not client.serving():
            if time.monotonic() > deadline:
                raise SystemExit("sidecar did not become SERVING")
            time.sleep(0.1)
