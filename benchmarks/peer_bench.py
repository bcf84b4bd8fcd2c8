"""The sidecar beside what a team would build instead (``benchmarks.peer``, FastAPI),
and beside itself with dynamic batching; everything measured in one run.

    python -m benchmarks.peer_bench       # make bench runs it; writes bench-output/peer.json

1. Decisions: the same CHECKED requests routed by both, compared field by field
   (tier, reason, class, confidence, rule, thresholds, arm). A mismatch fails the
   run: the comparison below would not be of like with like.
2. Server CPU per request at RATE requests/s, open loop, ROUNDS interleaved rounds of
   four servers: the gRPC floor, the sidecar, FastAPI's floor, the peer (medians).
3. CONCURRENCY callers through one client, closed loop: unary Route, the same
   calls coalesced (``Batching()``), and the peer over HTTP: predictions per second
   and latency. Then unary and coalesced again, open loop at the same offered rate
   (OFFERED_SHARE of what unary sustained), for their p99 side by side.

The sidecar runs as the Route benchmark runs it (spool fsync on, escalations
forwarded, spans exported). Nothing here is enforced but the decisions: the
targets are printed met or missed."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks import httpload, loadgen
from benchmarks.harness import (
    Proc,
    phase,
    phase_seconds,
    prepare,
    start,
    start_servers,
    wait_serving,
)
from hitl_client import Batching, RouterClient
from hitl_client.stubs.hitl.v1 import router_pb2 as pb
from sidecar.core.decision import REASON_NAMES, TIER_NAMES

RATE = 300.0
SECONDS = 5.0
ROUNDS = 3
WORKERS = 2
CONCURRENCY = 16
CHECKED = 600
OFFERED_SHARE = 0.8
SERVERS = ("grpc_floor", "sidecar", "http_floor", "peer")
COMPARED = ("tier", "reason", "predicted_class", "calibrated_confidence", "rule_id",
            "t_high", "t_low", "experiment_arm")  # fmt: skip


def bodies_of(payloads: list[bytes]) -> list[dict[str, Any]]:
    """The request mix as the peer's JSON bodies."""
    bodies = []
    for payload in payloads:
        r = pb.RouteRequest.FromString(payload)
        bodies.append(
            {"request_id": r.request_id, "model": r.model, "logits": list(r.logits),
             "model_version": r.model_version, "domain": r.domain,
             "string_attributes": dict(r.string_attributes),
             "numeric_attributes": dict(r.numeric_attributes), "input_ref": r.input_ref,
             "context": dict(r.context)}
        )  # fmt: skip
    return bodies


def start_peer(workdir: Path, floor: bool) -> tuple[Proc, str]:
    name = "http-floor" if floor else "peer"
    args = ["--floor"] if floor else ["--policy", str(workdir / "policy.yaml"),
                                      "--state-dir", str(workdir / "peer-state")]  # fmt: skip
    proc = start(
        [sys.executable, "-m", "benchmarks.peer", "--port-file", str(workdir / f"{name}.addr"),
         *args],
        workdir / f"{name}.addr",
        workdir / f"{name}.log",
    )  # fmt: skip
    return proc, f"http://{proc.address}/route"


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (a loopback URL this run made)
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        result: dict[str, Any] = json.loads(answer.read())
    return result


def compare_decisions(
    sidecar: str,
    peer_url: str,
    payloads: list[bytes],
    bodies: list[dict[str, Any]],
    count: int = CHECKED,
) -> dict[str, Any]:
    """Route the first count requests through both; count those decided alike."""
    count = min(count, len(payloads))
    same, differing = 0, list[dict[str, Any]]()
    with RouterClient(sidecar, timeout=10) as client:
        for i in range(count):
            request = pb.RouteRequest.FromString(payloads[i])
            request.request_id = f"check-{i}"
            r = client.route(request)
            ours = {"tier": TIER_NAMES[r.tier], "reason": REASON_NAMES[r.reason],
                    "predicted_class": r.predicted_class,
                    "calibrated_confidence": r.calibrated_confidence, "rule_id": r.rule_id,
                    "t_high": r.t_high, "t_low": r.t_low, "experiment_arm": r.experiment_arm}  # fmt: skip
            theirs = post(peer_url, {**bodies[i], "request_id": f"check-{i}"})
            if all(ours[k] == theirs[k] for k in COMPARED):
                same += 1
            elif len(differing) < 5:
                differing.append({"request": i, "sidecar": ours, "peer": theirs})
    return {"checked": count, "same": same, "differing": differing}


def http_phase(
    proc: Proc, url: str, seconds: float, bodies: list[dict[str, Any]], tag: str
) -> dict[str, Any]:
    """``harness.phase`` for the HTTP servers."""
    cpu = proc.cpu_seconds()
    result = httpload.run_load(url, RATE, seconds, bodies, WORKERS, tag)
    return {
        **loadgen.percentiles(result.latencies_ms),
        "errors": result.errors,
        "sent": result.sent,
        "achieved_rate": result.achieved_rate,
        "cpu_us_per_request": (proc.cpu_seconds() - cpu) / max(result.sent, 1) * 1e6,
    }


def closed(result: loadgen.ClosedLoopResult) -> dict[str, Any]:
    return {"rate": result.rate, "errors": result.errors,
            **loadgen.percentiles(result.latencies_ms)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=phase_seconds, default=SECONDS, help="length of each phase"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, choices=range(1, 20), metavar="N")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hitl-peer-bench-"))
    payloads = prepare(workdir)
    bodies = bodies_of(payloads)
    servers = start_servers(workdir)
    sidecar, floor = servers.sidecar, servers.floor
    peer, peer_url = start_peer(workdir, floor=False)
    http_floor, floor_url = start_peer(workdir, floor=True)
    report: dict[str, Any] = {"rate": RATE, "seconds": args.seconds, "concurrency": CONCURRENCY}
    try:
        wait_serving(sidecar.address)
        report["decisions"] = compare_decisions(sidecar.address, peer_url, payloads, bodies)
        report["cpu_rounds"] = [
            _round(index, args.seconds, payloads, bodies, sidecar, floor, peer, peer_url,
                   http_floor, floor_url)
            for index in range(args.rounds)
        ]  # fmt: skip
        report["concurrent"] = _concurrent(sidecar, peer_url, payloads, bodies, args.seconds)
    finally:
        for proc in (peer, http_floor):
            proc.stop()
        servers.stop()
    report["cpu"] = {
        name: statistics.median(r[name]["cpu_us_per_request"] for r in report["cpu_rounds"])
        for name in SERVERS
    }
    (args.out / "peer.json").write_text(json.dumps(report, indent=2, default=float))
    print_report(report)
    shutil.rmtree(workdir, ignore_errors=True)
    decisions = report["decisions"]
    return 0 if decisions["same"] == decisions["checked"] else 1


def _round(
    index: int,
    seconds: float,
    payloads: list[bytes],
    bodies: list[dict[str, Any]],
    sidecar: Proc,
    floor: Proc,
    peer: Proc,
    peer_url: str,
    http_floor: Proc,
    floor_url: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, proc in (("grpc_floor", floor), ("sidecar", sidecar)):
        _, row[name] = phase(proc, RATE, seconds, payloads, WORKERS, f"r{index}-{name}")
    for name, proc, url in (("http_floor", http_floor, floor_url), ("peer", peer, peer_url)):
        row[name] = http_phase(proc, url, seconds, bodies, f"r{index}-{name}")
    return row


def _concurrent(
    sidecar: Proc,
    peer_url: str,
    payloads: list[bytes],
    bodies: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    address = sidecar.address
    unary = loadgen.closed_loop(address, CONCURRENCY, seconds, payloads, "c-unary")
    batched = loadgen.closed_loop(address, CONCURRENCY, seconds, payloads, "c-batch", Batching())
    peer = httpload.closed_loop(peer_url, CONCURRENCY, seconds, bodies, "c-peer")
    offered = max(unary.rate * OFFERED_SHARE, 1.0)
    open_unary = loadgen.run_load(address, offered, seconds, payloads, 1, "o-unary")
    open_batched = loadgen.run_load(address, offered, seconds, payloads, 1, "o-batch", Batching())
    return {
        "unary": closed(unary),
        "batched": closed(batched),
        "peer": closed(peer),
        "offered_rate": offered,
        "open_unary": {**loadgen.percentiles(open_unary.latencies_ms),
                       "errors": open_unary.errors},
        "open_batched": {**loadgen.percentiles(open_batched.latencies_ms),
                         "errors": open_batched.errors},
    }  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    d = report["decisions"]
    print(f"decisions: {d['same']} of {d['checked']} identical, sidecar and peer")
    for diff in d["differing"]:
        print(f"  differs: {diff}")
    cpu = report["cpu"]
    print(f"\nserver CPU per request at {report['rate']:.0f}/s, median of"
          f" {len(report['cpu_rounds'])} interleaved rounds:")  # fmt: skip
    for name in SERVERS:
        p99s = [r[name]["p99"] for r in report["cpu_rounds"]]
        print(f"  {name:11} {cpu[name]:7.0f} us   p99 {statistics.median(p99s):.2f} ms")
    ratios = {
        "sidecar / peer": cpu["sidecar"] / cpu["peer"],
        "sidecar / gRPC floor": cpu["sidecar"] / cpu["grpc_floor"],
        "peer / FastAPI floor": cpu["peer"] / cpu["http_floor"],
        "gRPC floor / FastAPI floor": cpu["grpc_floor"] / cpu["http_floor"],
    }
    print("  " + "; ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    c = report["concurrent"]
    print(
        f"\n{report['concurrency']} callers through one client, closed loop (predictions/s, p50 / p99 ms):"
    )
    for name, label in (("unary", "sidecar, unary"), ("batched", "sidecar, coalesced"),
                        ("peer", "peer over HTTP")):  # fmt: skip
        r = c[name]
        print(
            f"  {label:20} {r['rate']:8.0f}/s   {r['p50']:.2f} / {r['p99']:.2f}   errors {r['errors']}"
        )
    print(f"open loop at {c['offered_rate']:.0f}/s: unary p99 {c['open_unary']['p99']:.2f} ms,"
          f" coalesced p99 {c['open_batched']['p99']:.2f} ms")  # fmt: skip
    targets = {
        "unary CPU at or below the peer's": ratios["sidecar / peer"] <= 1.0,
        "unary CPU <= 1.35 x the gRPC floor": ratios["sidecar / gRPC floor"] <= 1.35,
        "coalesced >= 3 x unary at 16 callers": c["batched"]["rate"] >= 3 * c["unary"]["rate"],
        "coalesced p99 <= unary p99 at the same rate":
            c["open_batched"]["p99"] <= c["open_unary"]["p99"],
        "coalesced ahead of the peer at 16 callers": c["batched"]["rate"] > c["peer"]["rate"],
    }  # fmt: skip
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'missed'}" for k, v in targets.items()))


if __name__ == "__main__":
    raise SystemExit(main())
