"""The forwarder's sustained delivery rate to each sink (``make bench`` runs it after
the Route benchmark; ``python -m benchmarks.forwarder_bench``).

For each sink, a spool is filled with N escalations (a backlog, as after an outage),
the sink's real server is started (``hitl review serve`` on SQLite, or the
machine's NATS JetStream), then a real sidecar process on that state directory.
The clock and the sidecar's CPU run from its answering SERVING to the spool being
empty, so its start-up (about 0.4 s of CPU) stays out of the figures; what the
forwarder delivered before SERVING is left out of the count by its share of the
spool's bytes (the records differ in size by a few bytes). The sink's own count is
checked against N. Exits 1 when a sink sustains less than
LIMIT_PER_SECOND: the rate a sidecar needs to keep up with 30 % of Route calls
escalated at 3000 calls/s."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import REVIEW_TOKEN, Proc, prepare, review_principal, start, wait_serving
from sidecar.escalation.record import Escalation
from sidecar.escalation.spool import Spool, acked_offset

LIMIT_PER_SECOND = 900.0
NATS_URL = os.environ.get("HITL_BENCH_NATS", "nats://127.0.0.1:4222")


def fill_spool(directory: Path, count: int) -> int:
    """count escalations as the sidecar writes them; returns the end offset."""
    spool = Spool(directory, fsync=False)
    run = uuid.uuid4().hex[:8]
    for i in range(count):
        escalation = Escalation(
            escalation_id=f"bench-{run}-{i:07d}",
            request_id=f"req-{i}",
            model="bench",
            model_version="v1",
            domain=["", "eu", "us"][i % 3],
            tier=["HUMAN_ASSISTED", "HUMAN_PRIMARY", "AUTOMATED"][i % 3],
            reason="THRESHOLD",
            rule_id="",
            predicted_class=i % 10,
            predicted_label=f"class-{i % 10}",
            calibrated_confidence=0.61,
            policy_revision=1,
            calibration_version="temperature-bench",
            experiment_arm="control",
            degraded=False,
            input_ref=f"s3://bench/inputs/{i}",
            trace_id=uuid.uuid4().hex,
            created_at=time.time(),
            numeric_attributes={"amount": 900.0},
            string_attributes={"topic": "billing", "customer": f"c{i % 500}"},
            logits=[0.1 * k for k in range(10)],
        )
        spool.append(orjson.dumps(escalation.to_dict()))
    end = spool.stats().end_offset
    spool.close()
    return end


def measure(workdir: Path, sink: str, count: int) -> dict[str, Any]:
    state = workdir / f"state-{sink}"
    end = fill_spool(state / "spool", count)
    python = sys.executable
    server: Proc | None = None
    deployment = f"bench-{uuid.uuid4().hex[:8]}"
    credentials: list[str] = []
    if sink == "review":
        review_principal(f"sqlite:{workdir / 'review.db'}", workdir / REVIEW_TOKEN)
        credentials = ["--review-token-file", str(workdir / REVIEW_TOKEN)]
        server = start(
            [python, "-m", "hitl", "review", "serve", "--listen", "127.0.0.1:0",
             "--db", f"sqlite:{workdir / 'review.db'}", "--port-file", str(workdir / "review.addr")],
            workdir / "review.addr", workdir / "review.log",
        )  # fmt: skip
        url = f"review://{server.address}"
    else:
        url = NATS_URL
    sidecar = start(
        [python, "-m", "hitl", "sidecar", "--policy", str(workdir / "policy.yaml"),
         "--listen", "127.0.0.1:0", "--state-dir", str(state), "--sink", url,
         "--deployment", deployment, "--port-file", str(workdir / f"sidecar-{sink}.addr"),
         *credentials],
        workdir / f"sidecar-{sink}.addr", workdir / f"sidecar-{sink}.log",
    )  # fmt: skip
    try:
        wait_serving(sidecar.address)
        started, cpu, first = time.monotonic(), sidecar.cpu_seconds(), acked_offset(state / "spool")
        while acked_offset(state / "spool") < end:
            if time.monotonic() - started > 300:
                raise SystemExit(f"{sink}: the spool did not drain within 300 s")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        cpu = sidecar.cpu_seconds() - cpu
    finally:
        sidecar.stop()
        if server is not None:
            server.stop()
    if sink == "review":
        with sqlite3.connect(workdir / "review.db") as db:
            received = db.execute("SELECT count(*) FROM review_items").fetchone()[0]
    else:
        received = asyncio.run(_nats_count(deployment))
    measured = count * (end - first) / end  # delivered after SERVING
    return {
        "sink": sink,
        "escalations": count,
        "received": received,
        "seconds": seconds,
        "delivered_before_serving": count - measured,
        "per_second": measured / seconds,
        "sidecar_cpu_us_per_escalation": cpu / measured * 1e6,
    }


async def _nats_count(deployment: str) -> int:
    import nats

    from sidecar.escalation.sinks.nats import NatsSink

    stream = NatsSink([NATS_URL], deployment, 5.0).stream
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        messages = (await js.stream_info(stream)).state.messages
        await js.delete_stream(stream)
        return int(messages)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--escalations", type=int, default=20_000)
    parser.add_argument("--sinks", default="review,nats")
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hitl-forward-bench-"))
    prepare(workdir)  # the policy and calibrator the sidecar needs to start
    results = [measure(workdir, sink, args.escalations) for sink in args.sinks.split(",")]
    report = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "limit_per_second": LIMIT_PER_SECOND,
        "results": results,
    }
    (args.out / "forwarder.json").write_text(json.dumps(report, indent=2))
    print(f"\nforwarder, a backlog of {args.escalations} escalations, batches of 256")
    print("sink        delivered/s   seconds   received   sidecar cpu us/escalation")
    ok = True
    for r in results:
        print(f"{r['sink']:<10} {r['per_second']:11.0f} {r['seconds']:9.2f} {r['received']:10d}"
              f" {r['sidecar_cpu_us_per_escalation']:12.0f}")  # fmt: skip
        ok &= r["received"] == r["escalations"] and r["per_second"] >= LIMIT_PER_SECOND
    print(
        f"\nlimit: every sink >= {LIMIT_PER_SECOND:.0f}/s with all received: {'PASS' if ok else 'FAIL'}"
    )
    shutil.rmtree(workdir, ignore_errors=True)  # kept, with its logs, by a run that raises
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
