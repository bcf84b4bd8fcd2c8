"""Rounds of fixed-rate load on one server, for profiling and A/B comparisons.

    python -m benchmarks.load_rounds --rates 250,1000 --rounds 3
    python -m benchmarks.load_rounds --sidecar-env HITL_SPOOL_FSYNC=false
    python -m benchmarks.load_rounds --floor
    python -m benchmarks.load_rounds --profile "py-spy record -r 250 -f raw -p {pid} -d {seconds} -o spy.txt"

It starts the sidecar exactly as ``route_bench`` runs it (its calibrator, policy,
request mix, review queue and span receiver), or with ``--floor`` the do-nothing
floor, and drives it open loop at each rate in turn, round after round. Each round
prints its latency percentiles, split between escalated calls and the others, and
the server's CPU per call split between the main thread (the event loop), its
other threads and its children (the span exporter). ``--profile`` runs a command
beside the last round, with {pid} the server's and {seconds} the round's length.
Nothing here judges: ``route_bench`` is the benchmark with the limit."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from benchmarks import loadgen
from benchmarks.harness import (
    Proc,
    prepare,
    start_floor,
    start_review,
    start_sidecar,
    start_sink,
    wait_serving,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="500", help="requests/s, comma-separated, in turn")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the rates")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--floor", action="store_true", help="load the do-nothing floor instead")
    parser.add_argument(
        "--sidecar-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the sidecar, e.g. HITL_SPOOL_FSYNC=false (repeatable)",
    )
    parser.add_argument(
        "--profile", default="", help="command run beside the last round ({pid}, {seconds})"
    )
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",")]
    env = dict(setting.split("=", 1) for setting in args.sidecar_env)
    workdir = Path(tempfile.mkdtemp(prefix="hitl-rounds-"))
    payloads = prepare(workdir)
    started: list[Proc] = []
    review_db: Path | None = None
    try:
        if args.floor:
            server = start_floor(workdir)
            started.append(server)
        else:
            sink = start_sink(workdir)
            started.append(sink)
            review, review_db = start_review(workdir)
            started.append(review)
            policy = ["--policy", str(workdir / "policy.yaml")]
            server = start_sidecar(workdir, sink, review, policy, env)
            started.append(server)
            wait_serving(server.address)
        print(f"{'floor' if args.floor else 'sidecar'} pid {server.process.pid}", flush=True)
        loadgen.run_load(server.address, rates[0], 2.0, payloads, args.workers, "warm")
        last = args.rounds * len(rates) - 1
        for number in range(last + 1):
            rate = rates[number % len(rates)]
            command = args.profile if number == last else ""
            line = one_round(server, rate, args.seconds, payloads, args.workers, command)
            print(line, flush=True)
    finally:
        for proc in reversed(started):
            proc.stop()
    if review_db is not None:
        shutil.rmtree(review_db.parent)
    shutil.rmtree(workdir, ignore_errors=True)  # kept, with its logs, by a run that raises
    return 0


def one_round(
    server: Proc, rate: float, seconds: float, payloads: list[bytes], workers: int, profile: str
) -> str:
    """One round of load at rate, with the profile command beside it if given; its
    report line."""
    profiler = None
    if profile:
        words = shlex.split(profile.format(pid=server.process.pid, seconds=round(seconds)))
        profiler = subprocess.Popen(words)
    before = server.cpu_split()
    result = loadgen.run_load(
        server.address, rate, seconds, payloads, workers, uuid.uuid4().hex[:12]
    )
    spent = [after - earlier for after, earlier in zip(server.cpu_split(), before, strict=True)]
    if profiler is not None:
        profiler.wait()
    calls = max(result.sent, 1)
    main, threads, children = (cpu / calls * 1e6 for cpu in spent)
    every = loadgen.percentiles(result.latencies_ms)
    escalated = loadgen.percentiles(result.latencies_ms[result.escalated])
    others = loadgen.percentiles(result.latencies_ms[~result.escalated])
    return (
        f"rate {rate:6.0f}/s achieved {result.achieved_rate:6.0f}/s errors {result.errors}"
        f" | p50 {every['p50']:.2f} p90 {every['p90']:.2f} p99 {every['p99']:.2f}"
        f" max {every['max']:.2f} ms"
        f" | escalated p50 {escalated['p50']:.2f} p99 {escalated['p99']:.2f}"
        f", others p50 {others['p50']:.2f} p99 {others['p99']:.2f} ms"
        f" | cpu us/call main {main:.0f} threads {threads:.0f} children {children:.0f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
