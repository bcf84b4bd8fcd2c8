"""Thresholds under label shift, on the real classifier outputs in
../shared/data/calibration (skipped when absent).

    python -m benchmarks.label_shift [--target 0.99] [--seed 0]

Each file is split in halves (seeded). The first half is resampled long-tailed (class
c of C kept with probability 0.05 ** (c / (C - 1))): the labelled rows a team has.
The second, balanced half is production. Each calibration method is fitted on the
labelled rows and t_high bounded on cross-fitted confidences, once assuming no shift
and once for production's class mix estimated from its unlabelled outputs
(--production, calibrators.shift); then production is routed and the Tier-1
accuracy it actually gets is printed beside the target, with the share automated
and the guaranteed bound. Exits 1 when a corrected threshold misses its target."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from calibrators.data import Dataset, load_dataset
from calibrators.fit import cross_fitted
from calibrators.methods import applicable, method
from calibrators.shift import describe, estimate_priors, too_uncertain
from calibrators.thresholds import ThresholdError, recommend_thresholds

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "calibration"
FILES = ("wideresnet-16-4-cifar-10.npz", "densenet-bc-100-cifar-100.npz")
TAIL = 0.3  # the rarest class keeps this share of its rows


def split(data: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """A long-tailed labelled half and a balanced production half."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(data.rows)
    labelled, production = rows[: data.rows // 2], rows[data.rows // 2 :]
    keep = TAIL ** (data.labels[labelled] / (data.classes - 1))
    labelled = labelled[rng.random(labelled.shape[0]) < keep]
    return data.take(labelled), data.take(production)


def run(path: Path, target: float, level: float, seed: int) -> list[dict[str, object]]:
    labelled, production = split(load_dataset(path), seed)
    results = []
    for candidate in applicable(labelled.classes):
        results += _method(path, candidate.name, labelled, production, target, level, seed)
    return results


def _method(
    path: Path,
    name: str,
    labelled: Dataset,
    production: Dataset,
    target: float,
    level: float,
    seed: int,
) -> list[dict[str, object]]:
    calibrator = method(name, labelled.classes).fit(labelled.logits, labelled.labels)
    held_out = cross_fitted(labelled, name, 5, seed)
    deployed = calibrator.predict(production.logits)
    conf, ok = held_out.max(axis=1), held_out.argmax(axis=1) == labelled.labels
    shares = np.bincount(labelled.labels, minlength=labelled.classes) / labelled.rows
    priors = estimate_priors(deployed, shares)
    shift, weights = describe(labelled.labels, priors, production.rows)
    results = []
    for corrected in (False, True):
        row: dict[str, object] = {
            "file": path.name,
            "method": name,
            "labelled_rows": labelled.rows,
            "correction": "production priors (EM)" if corrected else "none",
            "total_variation": round(shift.total_variation, 3),
        }
        problem = too_uncertain(shift, labelled.rows) if corrected else ""
        try:
            if problem:
                raise ThresholdError(problem)
            report = recommend_thresholds(
                conf, ok, target, target, level, None, weights if corrected else None
            )
        except ThresholdError as exc:
            row["refused"] = str(exc)
            results.append(row)
            continue
        t_high = report.default.t_high
        automated = deployed.max(axis=1) >= t_high
        right = deployed.argmax(axis=1) == production.labels
        achieved = float(right[automated].mean()) if automated.any() else float("nan")
        row.update(
            t_high=t_high,
            bound=round(report.default.tier1_lower_bound, 4),
            automated=round(float(automated.mean()), 3),
            achieved=round(achieved, 4),
            held=bool(achieved >= target),
        )
        results.append(row)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    args = parser.parse_args()
    failed = False
    print(
        "| file | method | labelled rows | shift (TV) | correction | t_high | bound | automated | achieved | target held |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in FILES:
        path = args.data_dir / name
        if not path.exists():
            print(f"skipped: {path} is not present")
            continue
        for r in run(path, args.target, args.level, args.seed):
            if "refused" in r:
                print(
                    f"| {r['file']} | {r['method']} | {r['labelled_rows']} | {r['total_variation']} | "
                    f"{r['correction']} | refused: {r['refused']} | | | | |"
                )
                continue
            print(
                f"| {r['file']} | {r['method']} | {r['labelled_rows']} | {r['total_variation']} | "
                f"{r['correction']} | {r['t_high']} | {r['bound']} | {r['automated']} | "
                f"{r['achieved']} | {'yes' if r['held'] else 'NO'} |"
            )
            failed |= r["correction"] != "none" and not r["held"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
