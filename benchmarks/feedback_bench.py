"""How fast the feedback service takes events and joins them to their decisions
(``make bench``; ``python -m benchmarks.feedback_bench``).

The service runs as a real process (``hitl feedback serve`` on SQLite, on the
project's disk: its commits are what is measured; or on ``--db``, an empty
PostgreSQL database or schema), without a rate limit per principal: what is
measured is the service's capacity. Before the phases, ``DECISIONS``
decision records are sent as a sidecar sends them (RecordDecisions batches). Then:

1. **Record, open loop**: OUTCOME events about those requests at ``--rate`` events/s
   (default 1,000) for ``--seconds``, from a worker process on its own event loop,
   each call fired at its scheduled time whatever the earlier ones are doing, its
   latency measured from that time to the service's answer (``loadgen.open_loop``).
   At the answer the event is stored, joined and counted: the join is the store's
   (a request's decision and events are read together), and the counter moves
   before the answer is sent.
2. **Joined at the first look**: for a sample of the acknowledged events, one Get
   each right after the load: the event must be there beside its decision.
3. **RecordBatch, closed loop**: batches of 100 from ``CONCURRENCY`` callers, each
   sending its next as soon as its last is answered: the events per second the
   service sustains.
4. **The same two over HTTP** (Connect, JSON bodies, as ``curl`` sends them; aiohttp
   with one connection pool): Record open loop at the same rate, then RecordBatch
   of 100 closed loop.

Exits 1 unless the Record phases' p99 (gRPC and HTTP) is within ``LIMIT_SECONDS`` (the target: an
event joined and counted within 1 s of its acknowledgement at 1,000 events/s; the
acknowledgement comes after both), no call failed, and every sampled event was
joined."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from google.protobuf import json_format

from benchmarks import loadgen
from benchmarks.harness import start
from hitl_client.stubs.hitl.v1 import decision_pb2 as dpb
from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from hitl_client.stubs.hitl.v1 import feedback_pb2_grpc as fpb_grpc

LIMIT_SECONDS = 1.0
RATE = 1000.0
SECONDS = 10.0
DECISIONS = 20_000
SAMPLE = 200
CONCURRENCY = 4
BATCH = 100
ROLES = {"sidecar": "sidecar", "client": "client", "viewer": "viewer"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=RATE)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    parser.add_argument(
        "--db", help="an empty database to run on (default: a new SQLite file)", default=""
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hitl-feedback-bench-"))
    try:
        report = run(workdir, args.rate, args.seconds, args.db)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    (args.out / "feedback_bench.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    return 0 if report["passed"] else 1


def run(workdir: Path, rate: float, seconds: float, db: str = "") -> dict[str, Any]:
    db = db or f"sqlite:{workdir / 'feedback.db'}"
    tokens = _principals(db)
    http = f"127.0.0.1:{_free_port()}"
    url = f"http://{http}/hitl.v1.Feedback"
    service = start(
        [sys.executable, "-m", "hitl", "feedback", "serve", "--listen", "127.0.0.1:0", "--db", db,
         "--port-file", str(workdir / "feedback.addr"),
         "--rate-limit", "0",  # the service's capacity, not one principal's share
         "--http-listen", http],
        workdir / "feedback.addr", workdir / "feedback.log",
    )  # fmt: skip
    try:
        asyncio.run(_decisions(service.address, tokens["sidecar"]))
        cpu = service.cpu_seconds()
        record = loadgen.in_worker_process(
            _record, service.address, tokens["client"], rate, seconds
        )
        record_cpu = service.cpu_seconds() - cpu
        joined = asyncio.run(_joined(service.address, tokens["viewer"], record.sent))
        batched = loadgen.in_worker_process(
            _batched, service.address, tokens["client"], CONCURRENCY, seconds
        )
        record_http = loadgen.in_worker_process(_record_http, url, tokens["client"], rate, seconds)
        batched_http = loadgen.in_worker_process(
            _batched_http, url, tokens["client"], CONCURRENCY, seconds
        )
    finally:
        service.stop()
    figures = loadgen.percentiles(record.latencies_ms)
    http_figures = loadgen.percentiles(record_http.latencies_ms)
    passed = (
        max(figures["p99"], http_figures["p99"]) <= LIMIT_SECONDS * 1000.0
        and record.errors == record_http.errors == 0
        and batched.errors == batched_http.errors == 0
        and joined["joined"] == joined["sampled"]
    )
    return {
        "record": {
            **figures,
            "requested_rate": rate,
            "achieved_rate": (record.sent - record.errors) / record.elapsed,
            "errors": record.errors,
            "sent": record.sent,
            "cpu_us_per_event": record_cpu / max(record.sent, 1) * 1e6,
        },
        "joined": joined,
        "record_batch": _batch_figures(batched),
        "record_http": {
            **http_figures,
            "requested_rate": rate,
            "achieved_rate": (record_http.sent - record_http.errors) / record_http.elapsed,
            "errors": record_http.errors,
            "sent": record_http.sent,
        },
        "record_batch_http": _batch_figures(batched_http),
        "database": db.partition(":")[0],
        "limit_ms": LIMIT_SECONDS * 1000.0,
        "passed": passed,
    }


def _batch_figures(result: loadgen.ClosedLoopResult) -> dict[str, Any]:
    return {
        "events_per_second": result.rate * BATCH,
        "batches": len(result.latencies_ms),
        "batch_p99_ms": loadgen.percentiles(result.latencies_ms)["p99"],
        "errors": result.errors,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _principals(db: str) -> dict[str, str]:
    from sidecar.auth import hash_token, new_token
    from sidecar.feedback.store import open_store

    tokens = {name: new_token() for name in ROLES}
    store = open_store(db)
    try:
        for name, role in ROLES.items():
            store.add_principal(name, frozenset({role}), hash_token(tokens[name]), "", 0.0)
    finally:
        store.close()
    return tokens


def _stub(address: str) -> tuple[grpc.aio.Channel, fpb_grpc.FeedbackAsyncStub]:
    channel = grpc.aio.insecure_channel(address)
    return channel, fpb_grpc.FeedbackStub(channel)


def _metadata(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _decisions(address: str, token: str) -> None:
    channel, stub = _stub(address)
    now = time.time()
    async with channel:
        for start_at in range(0, DECISIONS, 1000):
            records = [
                fpb.DecisionRecord(
                    request_id=f"r-{i}",
                    model="m",
                    tier=dpb.TIER_AUTOMATED,
                    reason=dpb.REASON_THRESHOLD,
                    predicted_class=1,
                    calibrated_confidence=0.97,
                    logits=[0.1, 3.0, -1.0],
                    policy_revision=1,
                    decided_at=now,
                    inclusion_probability=1.0,
                )
                for i in range(start_at, start_at + 1000)
            ]
            await stub.RecordDecisions(
                fpb.RecordDecisionsRequest(decisions=records), metadata=_metadata(token)
            )


def _outcome(i: int, tag: str) -> fpb.FeedbackEvent:
    return fpb.FeedbackEvent(
        feedback_id=f"{tag}-{i}",
        request_id=f"r-{i % DECISIONS}",
        model="m",
        type=fpb.FEEDBACK_OUTCOME,
        label=fpb.Label(class_index=i % 3),
    )


async def _record(address: str, token: str, rate: float, seconds: float) -> loadgen.WorkerResult:
    channel, stub = _stub(address)
    async with channel:

        async def call(i: int) -> bool:
            await stub.Record(_outcome(i, "o"), metadata=_metadata(token), timeout=10.0)
            return False

        return await loadgen.open_loop(rate, seconds, call, grpc.RpcError)


async def _joined(address: str, token: str, sent: int) -> dict[str, Any]:
    """Get each of a sample of the acknowledged events once: joined when the event is
    there beside its decision."""
    channel, stub = _stub(address)
    step = max(1, sent // SAMPLE)
    sampled = joined = 0
    async with channel:
        for i in range(0, sent, step):
            event = _outcome(i, "o")
            history = await stub.Get(
                fpb.GetRequest(request_id=event.request_id), metadata=_metadata(token)
            )
            sampled += 1
            ids = {e.event.feedback_id for e in history.events}
            joined += history.HasField("decision") and event.feedback_id in ids
    return {"sampled": sampled, "joined": joined}


async def _batched(
    address: str, token: str, concurrency: int, seconds: float
) -> loadgen.ClosedLoopResult:
    channel, stub = _stub(address)
    async with channel:

        async def call(lane: int, i: int) -> None:
            events = [_outcome(i * BATCH + k, f"b{lane}") for k in range(BATCH)]
            await stub.RecordBatch(
                fpb.RecordBatchRequest(events=events), metadata=_metadata(token), timeout=10.0
            )

        return await loadgen.closed_lanes(concurrency, seconds, call, grpc.RpcError)


def _json_event(i: int, tag: str) -> dict[str, Any]:
    return json_format.MessageToDict(_outcome(i, tag))


async def _record_http(url: str, token: str, rate: float, seconds: float) -> loadgen.WorkerResult:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(i: int) -> bool:
            async with session.post(f"{url}/Record", json=_json_event(i, "h")) as response:
                await response.read()
                response.raise_for_status()
            return False

        return await loadgen.open_loop(rate, seconds, call, aiohttp.ClientError)


async def _batched_http(
    url: str, token: str, concurrency: int, seconds: float
) -> loadgen.ClosedLoopResult:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(lane: int, i: int) -> None:
            events = [_json_event(i * BATCH + k, f"hb{lane}") for k in range(BATCH)]
            async with session.post(f"{url}/RecordBatch", json={"events": events}) as response:
                await response.read()
                response.raise_for_status()

        return await loadgen.closed_lanes(concurrency, seconds, call, aiohttp.ClientError)


def print_report(report: dict[str, Any]) -> None:
    record, batch = report["record"], report["record_batch"]
    print(
        f"feedback service on {report['database']}, Record at {record['requested_rate']:.0f}/s"
        " open loop: "
        f"achieved {record['achieved_rate']:.0f}/s, p50 {record['p50']:.2f} ms, "
        f"p99 {record['p99']:.2f} ms, max {record['max']:.2f} ms, "
        f"{record['errors']} errors, server CPU {record['cpu_us_per_event']:.0f} us/event"
    )
    joined = report["joined"]
    print(f"joined at the first Get after the load: {joined['joined']} of {joined['sampled']}")
    print(
        f"RecordBatch of {BATCH}, {CONCURRENCY} callers: "
        f"{batch['events_per_second']:.0f} events/s, batch p99 {batch['batch_p99_ms']:.1f} ms"
    )
    http, http_batch = report["record_http"], report["record_batch_http"]
    print(
        f"over HTTP (Connect, JSON): Record at {http['requested_rate']:.0f}/s achieved "
        f"{http['achieved_rate']:.0f}/s, p50 {http['p50']:.2f} ms, p99 {http['p99']:.2f} ms, "
        f"{http['errors']} errors; RecordBatch of {BATCH}: "
        f"{http_batch['events_per_second']:.0f} events/s"
    )
    verdict = "PASS" if report["passed"] else "FAIL"
    print(f"limit: acknowledged (stored, joined, counted) within {report['limit_ms']:.0f} ms "
          f"at p99: {verdict}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
