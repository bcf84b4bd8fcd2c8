"""The Route latency benchmark: the real sidecar against a do-nothing floor, same
load, same run (``make bench``; ``--short`` for CI).

The sidecar runs with a real ONNX calibrator, a realistic policy (per-domain
thresholds, three rules, a two-arm experiment, a 5 % audit sample), the audit log,
escalations spooled with fsync on and forwarded to a real review queue process, and
tracing exported in batches over OTLP to a local receiver. The review queue and the
receiver stand in for services on other machines: they run under the idle
scheduling class (SCHED_IDLE), so they use a core only when nothing else wants it,
and the queue keeps its database in /dev/shm, so its commits do not contend with
the spool's fsyncs for this disk.
Load is open loop at a constant rate from worker processes. The benchmark exits 1
when the sidecar's unary Route p99, the median over trials, is 5 ms or more. A
trial in which the floor's own p99 reached the limit measured the machine's stalls,
not the sidecar: it is reported, left out of the median and run again, up to
MAX_REPEATS times. If fewer trials than asked for could be judged, the run says
"this machine cannot judge the p99" and exits 3 (CANNOT_JUDGE): never a pass, and
not a failure of the sidecar either. CI reports this benchmark without gating on it;
its gates are instructions and CPU (``benchmarks.instructions``, ``cpu_gate``).
The sidecar's CPU per call counts its span-export child with it, and its latency is
also split between the calls answered with an escalation (which wait for an fsync)
and the others.

Default rate, 500 requests/s: on a 2-core machine the two load processes, the
sidecar, its span-export child and the OTLP receiver share the cores. On the
2-core machines measured so far the do-nothing floor costs 200 to 750 us of server
CPU per call and the sidecar 500 to 1530 us. On most of them the sidecar phase at
500/s keeps the machine about half busy (sidecar 55 % of a core, each load process
15 %), while at 1000/s the sidecar's p99 measures queueing for a core (21 to 97 ms
against the floor's 2.6 to 3.6 ms), so 500/s leaves the cores headroom; on the
slowest (floor 740 us per call, its own p99 11.8 ms) 500/s was already near the
sidecar's knee. 500 is also the lowest default its requirements allow. The sweep shows
the curve beyond.

``--policy-swaps`` (``make bench`` runs it after the default run): the sidecar takes
its policy from a registry process instead of a file, and during every trial phase
the policy changes once a second (``policy_swapper``), alternating a tightening
change an operator applies at once with a widening one (the other calibrator) that
is proposed and approved; so every other change has the sidecar download,
verify, build and warm a calibrator while it serves. The floor's phases get the
same changes, so the registry's and the benchmark's own work load both alike. The
same limit applies; the run also fails unless every change was applied by the
sidecar, none was refused, and some landed inside each of the sidecar's measured
windows. The sidecar's calls are also split by when they were due: from a change
to NEAR_SWAP_SECONDS after the sidecar applied it, by kind, or elsewhere. No sweep
and no throughput phases; the report goes to route_swaps.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import loadgen, throughput
from benchmarks.harness import (
    Proc,
    delivered,
    drain,
    escalated_share,
    phase,
    prepare,
    start_floor,
    start_registry,
    start_review,
    start_sidecar,
    start_sink,
    wait_serving,
)
from benchmarks.policy_swapper import Swapper, read_sidecar_log
from sidecar.escalation.spool import read_unacked

LIMIT_P99_MS = 5.0
TARGET_P99_MS = 2.5
TARGET_RATIO = 1.5
TARGET_STREAM = 20_000.0
TARGET_RSS_MB = 200.0
DEFAULT_RATE = 500.0
BATCH_SIZES = (100, 1000)
TARGET_BATCH_SHARE = 1 / 3  # of the floor's predictions per second, RouteBatch and RouteStream
NEAR_SWAP_SECONDS = 0.1  # after a swap, calls still count as near it (a stall's queue drains)
# The exit status of a run whose floor missed the limit in too many trials: the
# machine could not judge the sidecar (never a pass).
CANNOT_JUDGE = 3
MAX_REPEATS = 3  # trials run again, at most, because the floor itself missed the limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="requests/s for the enforced trials"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each trial phase")
    parser.add_argument("--trials", type=at_least_one, default=3)
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--sweep", default="250,500,1000,1500,2000", help="rates for the sweep ('' for none)"
    )
    parser.add_argument(
        "--short", action="store_true", help="CI: 4 s trials, no sweep, 3 s throughput"
    )
    parser.add_argument(
        "--policy-swaps",
        action="store_true",
        help="feed the sidecar from a registry process and change its policy during each phase"
        " (no sweep, no throughput; writes route_swaps.json)",
    )
    parser.add_argument(
        "--swap-seconds", type=float, default=1.0, help="with --policy-swaps: one change this often"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-output"))
    args = parser.parse_args(argv)
    if args.short:
        args.seconds, args.sweep = 4.0, ""
    if args.policy_swaps:
        args.sweep = ""
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hitl-bench-"))
    payloads = prepare(workdir)
    sink = start_sink(workdir)
    registry, swapper, policy_args = None, None, ["--policy", str(workdir / "policy.yaml")]
    calls: dict[str, loadgen.LoadResult] = {}
    if args.policy_swaps:
        registry, swapper, policy_args = start_registry(workdir, args.swap_seconds)
    review, review_db = start_review(workdir)
    sidecar = start_sidecar(workdir, sink, review, policy_args)
    floor = start_floor(workdir)
    try:
        wait_serving(sidecar.address)
        report = run(
            args,
            payloads,
            sidecar,
            floor,
            workdir / "state" / "spool",
            swapper.during if swapper else None,
            calls,
        )
    finally:
        for proc in (sidecar, floor, sink, review, registry):
            if proc is not None:
                proc.stop()
        if swapper is not None:
            swapper.close()
    report["escalations_undelivered"] = sum(1 for _ in read_unacked(workdir / "state" / "spool"))
    report["escalations_delivered"] = delivered(review_db)
    if swapper is not None:
        report["policy_swaps"] = swaps_report(
            swapper, workdir / "sidecar.log", report["trials"], calls
        )
    write_outputs(args.out, report)
    print_table(report)
    # Reported: the run's directory goes (its audit log alone reaches hundreds of MB).
    # A run that raises keeps it, with every process's log.
    shutil.rmtree(workdir, ignore_errors=True)
    return conclude(report, args.trials)


def conclude(report: dict[str, Any], wanted: int) -> int:
    """Print the verdicts; the exit status: 0 pass, 1 fail, CANNOT_JUDGE when the
    machine could not judge the p99 and nothing else failed."""
    print_repeats(report, wanted)
    enforced = report["enforced"]
    outcome = "PASS" if enforced["passed"] else "FAIL"
    if not enforced["machine_judged"]:
        outcome = "this machine cannot judge the p99"
    print(f"\nlimit: unary Route p99 (median of {wanted} trials) < {LIMIT_P99_MS} ms: {outcome}")
    swaps_failed = False
    if "policy_swaps" in report:
        swaps_failed = not report["policy_swaps"]["complete"]
        print(
            "policy swaps: every change made, applied by the sidecar, none refused, some in"
            f" each measured window: {'FAIL' if swaps_failed else 'PASS'}"
        )
    if enforced["errors"] or swaps_failed:
        return 1
    if not enforced["machine_judged"]:
        return CANNOT_JUDGE
    return 0 if enforced["passed"] else 1


def at_least_one(text: str) -> int:
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {count}")
    return count


def swaps_report(
    swapper: Swapper, log: Path, trials: list[dict[str, Any]], calls: dict[str, loadgen.LoadResult]
) -> dict[str, Any]:
    """The changes made, which the sidecar applied inside each phase's measured window,
    and the sidecar's latency near a swap against elsewhere."""
    seen = read_sidecar_log(log)
    reach = [
        (seen.loaded[c.revision] - c.at) * 1000.0 for c in swapper.made if c.revision in seen.loaded
    ]
    per_trial = [
        {
            name: sum(start <= seen.loaded.get(c.revision, 0.0) <= end for c in swapper.made)
            for name in ("floor", "sidecar")
            for start, end in [trial[name]["window"]]
        }
        for trial in trials
    ]
    applied = sum(c.revision in seen.loaded for c in swapper.made)
    return {
        "interval_seconds": swapper.interval,
        "made": len(swapper.made),
        "made_by_kind": dict(Counter(c.kind for c in swapper.made)),
        "applied": applied,
        "applied_in_sidecar_windows": [t["sidecar"] for t in per_trial],
        "applied_in_floor_windows": [t["floor"] for t in per_trial],
        "rejected": seen.rejected,
        "errors": swapper.errors,
        "reach_ms": {"p50": float(np.percentile(reach, 50)), "max": max(reach)} if reach else {},
        "near_swaps": near_swaps(
            swapper, seen.loaded, calls, [i for i, t in enumerate(trials) if t["judged"]]
        ),
        "complete": (
            applied == len(swapper.made) > 0
            and not swapper.errors
            and seen.rejected == 0
            and all(t["sidecar"] > 0 for t in per_trial)
        ),
    }


def near_swaps(
    swapper: Swapper,
    loaded: dict[int, float],
    calls: dict[str, loadgen.LoadResult],
    trials: list[int],
) -> dict[str, dict[str, float]]:
    """The judged trials' sidecar calls split by when they were due: from a change
    being made to NEAR_SWAP_SECONDS after the sidecar applied it (by kind), or
    elsewhere."""
    latencies, due, kinds = [], [], []
    for trial in trials:
        result = calls[f"t{trial}-sidecar"]
        kind = np.full(result.scheduled.shape, "elsewhere", dtype=object)
        for change in swapper.made:
            if change.phase == f"t{trial}-sidecar" and change.revision in loaded:
                end = loaded[change.revision] + NEAR_SWAP_SECONDS
                kind[(result.scheduled >= change.at) & (result.scheduled <= end)] = change.kind
        latencies.append(result.latencies_ms)
        due.append(result.scheduled)
        kinds.append(kind)
    every, every_kind = np.concatenate(latencies), np.concatenate(kinds)
    return {
        name: {"calls": int((every_kind == name).sum()),
               **loadgen.percentiles(every[every_kind == name])}
        for name in ("tighten", "widen", "elsewhere")
    }  # fmt: skip


def run(
    args: argparse.Namespace,
    payloads: list[bytes],
    sidecar: Proc,
    floor: Proc,
    spool: Path,
    during: Callable[[str], AbstractContextManager[None]] | None = None,
    calls: dict[str, loadgen.LoadResult] | None = None,
) -> dict[str, Any]:
    """The trials, sweep and throughput phases (spool: the sidecar's, drained before
    each throughput phase); during(tag), when given, wraps each trial phase (floor
    and sidecar alike, so both see the same extra load), and calls, when given,
    receives each trial phase's result by tag."""
    report: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "escalated_share": escalated_share(sidecar.address, payloads),
    }
    warm = loadgen.run_load(sidecar.address, args.rate, 2.0, payloads, args.workers, "warm")
    del warm

    def trial(index: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, proc in (("floor", floor), ("sidecar", sidecar)):
            tag = f"t{index}-{name}"
            with during(tag) if during else nullcontext():
                result, row[name] = phase(
                    proc, args.rate, args.seconds, payloads, args.workers, tag
                )
            if calls is not None:
                calls[tag] = result
        return row

    trials = run_trials(trial, args.trials)
    report["trials"] = trials
    report["enforced"] = enforced(trials, args.trials)
    report["sweep"] = []
    for rate in [float(r) for r in args.sweep.split(",") if r]:
        point: dict[str, Any] = {"rate": rate}
        for name, proc in (("floor", floor), ("sidecar", sidecar)):
            result = loadgen.run_load(
                proc.address,
                rate,
                min(args.seconds, 5.0),
                payloads,
                args.workers,
                f"sweep{rate}-{name}",
            )
            point[name] = {
                **loadgen.percentiles(result.latencies_ms),
                "errors": result.errors,
                "achieved_rate": result.achieved_rate,
            }
        report["sweep"].append(point)
    if during is not None:  # what the policy swaps cost is in the trials
        report["sidecar_peak_rss_mb"] = sidecar.peak_rss_mb()
        return report
    # The throughput phases leave the sidecar's exporter and audit log busy for a
    # while, so they run last: nothing latency-sensitive is measured after them.
    seconds = 3.0 if args.short else 8.0
    report["throughput"] = {"batch_sizes": BATCH_SIZES, "concurrency": throughput.CONCURRENCY}
    for size in BATCH_SIZES:
        for name, proc in (("floor", floor), ("sidecar", sidecar)):
            for method in ("batch", "stream"):
                drain(spool)
                report["throughput"][f"{name}_{method}_{size}"] = throughput.measure(
                    proc.address, method, size, seconds, payloads
                )
    report["sidecar_peak_rss_mb"] = sidecar.peak_rss_mb()
    return report


def run_trials(trial: Callable[[int], dict[str, Any]], wanted: int) -> list[dict[str, Any]]:
    """Every trial run, in order, each marked judged or not: trial(i) is run until
    wanted of them are judged, or MAX_REPEATS more have been run. A trial in which
    the floor, which does nothing, missed the limit itself measured the machine,
    not the sidecar: it is reported, not judged, and run again."""
    trials: list[dict[str, Any]] = []
    while sum(t["judged"] for t in trials) < wanted and len(trials) < wanted + MAX_REPEATS:
        row = trial(len(trials))
        row["judged"] = bool(row["floor"]["p99"] < LIMIT_P99_MS)
        trials.append(row)
    return trials


def enforced(trials: list[dict[str, Any]], wanted: int) -> dict[str, Any]:
    """The verdict and what it is taken from: the sidecar's p99 as the median over
    the judged trials (those whose floor was under the limit), and no call failed.
    With fewer than wanted judged, the machine could not judge the sidecar and the
    verdict fails; the figures are then the median over every trial."""
    judged = [t for t in trials if t["judged"]]
    machine_judged = len(judged) >= wanted
    basis = judged if machine_judged else trials
    p99s = sorted(t["sidecar"]["p99"] for t in basis)
    median = p99s[len(p99s) // 2]
    median_trial = next(t for t in basis if t["sidecar"]["p99"] == median)
    errors = sum(t["sidecar"]["errors"] + t["floor"]["errors"] for t in trials)
    return {
        "passed": bool(machine_judged and median < LIMIT_P99_MS and errors == 0),
        "sidecar_p99_median_ms": median,
        "judged_trials": len(judged),
        "machine_judged": machine_judged,
        "errors": errors,
        "median_trial": median_trial,
        "ratio": {
            k: median_trial["sidecar"][k] / median_trial["floor"][k]
            for k in ("p50", "p90", "p99", "p99.9", "max")
        },
    }


def write_outputs(out: Path, report: dict[str, Any]) -> None:
    name = "route_swaps.json" if "policy_swaps" in report else "route.json"
    (out / name).write_text(json.dumps(report, indent=2, default=float))
    if not report["sweep"]:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    rates = [p["rate"] for p in report["sweep"]]
    for name, colour in (("sidecar", "tab:red"), ("floor", "tab:blue")):
        for pct, style in (("p50", ":"), ("p99", "-"), ("p99.9", "--")):
            ax.plot(
                rates,
                [p[name][pct] for p in report["sweep"]],
                style,
                color=colour,
                marker="o",
                label=f"{name} {pct}",
            )
    ax.axhline(LIMIT_P99_MS, color="black", linewidth=0.8, label=f"limit {LIMIT_P99_MS} ms (p99)")
    ax.set(
        xlabel="offered rate (requests/s)",
        ylabel="latency (ms)",
        yscale="log",
        title="Route latency vs offered rate",
    )
    ax.legend(fontsize=8, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "route_latency.png", dpi=120)


def print_table(report: dict[str, Any]) -> None:
    m = report["enforced"]["median_trial"]
    ratio = report["enforced"]["ratio"]
    print(f"\nRoute, open loop at {report['rate']:.0f} req/s, {report['workers']} load processes, "
          f"{report['seconds']:.0f} s per phase; {report['escalated_share']:.0%} of requests escalated")  # fmt: skip
    print(f"machine: {report['machine']['cores']} cores, Python {report['machine']['python']}")
    print(
        f"{'':10}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}  {'achieved/req':>14}{'errors':>8}{'cpu us/req':>12}"
    )
    for name in ("floor", "sidecar"):
        r = m[name]
        print(f"{name:10}" + "".join(f"{r[k]:8.2f}" for k in ("p50", "p90", "p99", "p99.9", "max"))
              + f"  {r['achieved_rate']:6.0f}/{r['requested_rate']:<6.0f}{r['errors']:8d}{r['cpu_us_per_request']:12.0f}")  # fmt: skip
    print(
        f"{'ratio':10}" + "".join(f"{ratio[k]:8.2f}" for k in ("p50", "p90", "p99", "p99.9", "max"))
    )
    for part in ("escalated", "not_escalated"):  # an escalated call also waits for its fsync
        r = m["sidecar"][part]
        print(f"  {part.replace('_', ' '):14}" + "".join(f"{r[k]:8.2f}" for k in ("p50", "p90", "p99", "p99.9", "max")))  # fmt: skip
    print(
        "sidecar p99 per trial: "
        + ", ".join(
            f"{t['sidecar']['p99']:.2f}" + ("" if t["judged"] else " (not judged)")
            for t in report["trials"]
        )
        + " ms"
    )
    if "policy_swaps" in report:
        print_swaps(report["policy_swaps"])
    if "throughput" not in report:
        print(f"sidecar peak RSS: {report['sidecar_peak_rss_mb']:.0f} MB")
        return
    t = report["throughput"]
    print(f"\nthroughput, {t['concurrency']} batches in flight (predictions/s):")
    shares = []
    for size in t["batch_sizes"]:
        for method, label in (("batch", "RouteBatch "), ("stream", "RouteStream")):
            s, f = t[f"sidecar_{method}_{size}"], t[f"floor_{method}_{size}"]
            shares.append(s / f)
            print(f"  {label} of {size:4}: sidecar {s:8.0f}   floor {f:8.0f}   ({s / f:.0%})")
    for point in report["sweep"]:
        s, f = point["sidecar"], point["floor"]
        print(
            f"  sweep {point['rate']:6.0f}/s: sidecar p50 {s['p50']:.2f} p99 {s['p99']:.2f} ms, floor p50 {f['p50']:.2f} p99 {f['p99']:.2f} ms"
        )
    print(f"sidecar peak RSS: {report['sidecar_peak_rss_mb']:.0f} MB")
    targets = {
        f"p99 <= {TARGET_P99_MS} ms": report["enforced"]["sidecar_p99_median_ms"] <= TARGET_P99_MS,
        f"sidecar/floor p99 <= {TARGET_RATIO}": ratio["p99"] <= TARGET_RATIO,
        f"RouteStream >= {TARGET_STREAM:.0f}/s": t["sidecar_stream_100"] >= TARGET_STREAM,
        f"batches >= {TARGET_BATCH_SHARE:.0%} of the floor": min(shares) >= TARGET_BATCH_SHARE,
        f"peak RSS < {TARGET_RSS_MB:.0f} MB": report["sidecar_peak_rss_mb"] < TARGET_RSS_MB,
    }
    print("targets: " + "; ".join(f"{k}: {'met' if v else 'missed'}" for k, v in targets.items()))


def print_repeats(report: dict[str, Any], wanted: int) -> None:
    """Which trials the machine spoiled; the verdict is taken without them."""
    spoiled = [t["floor"]["p99"] for t in report["trials"] if not t["judged"]]
    if not spoiled:
        return
    print(
        f"note: in {len(spoiled)} trial(s) the floor, which does nothing, had p99 at or over the"
        " limit itself (" + ", ".join(f"{p:.2f}" for p in spoiled) + " ms): they measured the"
        " machine's stalls, not the sidecar (docs/performance-history.md, run 11), and are left out"
    )
    if not report["enforced"]["machine_judged"]:
        print(
            f"note: fewer than {wanted} of {len(report['trials'])} trials could judge the sidecar;"
            " the machine is too slow to judge the limit now: neither a pass nor a failure"
            f" of the sidecar (exit status {CANNOT_JUDGE})"
        )


def print_swaps(swaps: dict[str, Any]) -> None:
    kinds = swaps["made_by_kind"]
    print(
        f"\npolicy swaps, one every {swaps['interval_seconds']:g} s during every phase: "
        f"{swaps['made']} made ({kinds.get('tighten', 0)} tightening by the operator at once, "
        f"{kinds.get('widen', 0)} widening with a new calibrator, approved), "
        f"{swaps['applied']} applied by the sidecar, {swaps['rejected']} refused"
    )
    print(
        "  applied inside the sidecar's measured windows: "
        + ", ".join(str(n) for n in swaps["applied_in_sidecar_windows"])
        + " (per trial); inside the floor's: "
        + ", ".join(str(n) for n in swaps["applied_in_floor_windows"])
    )
    if swaps["reach_ms"]:
        print(
            f"  from the change to the sidecar's swap, under load: p50 {swaps['reach_ms']['p50']:.0f} ms, "
            f"max {swaps['reach_ms']['max']:.0f} ms"
        )
    for name, label in (("widen", "near a widening swap (download, session build)"),
                        ("tighten", "near a tightening swap (thresholds only)"),
                        ("elsewhere", "elsewhere")):  # fmt: skip
        near = swaps["near_swaps"][name]
        print(f"  sidecar calls {label}: {near['calls']}, p50 {near['p50']:.2f} p99 {near['p99']:.2f} "
              f"max {near['max']:.2f} ms")  # fmt: skip
    for error in swaps["errors"]:
        print(f"  change failed: {error}")


if __name__ == "__main__":
    raise SystemExit(main())
