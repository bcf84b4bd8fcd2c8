"""Every calibration method on the real classifier outputs in ../shared/data/calibration
(skipped with a note when absent): fit on a seeded half, judged on the other half.

    python -m benchmarks.calibration_report [--target 0.99] [--seed 0]

Prints one Markdown table per file (ECE before and after, adaptive ECE, NLL, Brier,
the t_high recommended on the fitting half and the Tier-1 accuracy it delivers on
the held-out half) and writes bench-output/calibration.json and .md. Exits 1 when
temperature scaling misses the data README's reference ECE or a recommended t_high
misses its Tier-1 target on the held-out half."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from calibrators.compare import Comparison, compare_methods
from calibrators.data import load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "calibration"
# The data README's ECE after temperature scaling, on its own seeded 5,000 / 5,000 split.
REFERENCE_ECE = {
    "densenet-bc-100-cifar-100.npz": 0.014,
    "wideresnet-16-4-cifar-10.npz": 0.0095,
}
OUT = Path("bench-output")


def misses(name: str, comparison: Comparison) -> list[str]:
    """What falls short: temperature scaling above the reference ECE, or a
    recommended t_high below its Tier-1 target on the held-out half."""
    reference, target = REFERENCE_ECE[name], comparison.target
    found = []
    for r in comparison.results:
        if r.method == "temperature" and r.after.ece > reference:
            found.append(f"{name}: temperature ECE {r.after.ece:.2%} > {reference:.2%}")
        if r.tier1_accuracy is not None and r.tier1_accuracy < target:
            found.append(f"{name}: {r.method} Tier-1 {r.tier1_accuracy:.4f} < {target}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    args = parser.parse_args()
    reports: list[dict[str, object]] = []
    tables: list[str] = []
    failures: list[str] = []
    for name, reference in REFERENCE_ECE.items():
        path = args.data_dir / name
        if not path.exists():
            print(f"skipped: {path} is not present")
            continue
        comparison = compare_methods(
            load_dataset(path), seed=args.seed, target=args.target, progress=True
        )
        table = comparison.table() + f"\nreference ECE after temperature scaling: {reference:.2%}\n"
        print(table)
        tables.append(table)
        reports.append(asdict(comparison))
        failures += misses(name, comparison)
    OUT.mkdir(exist_ok=True)
    (OUT / "calibration.json").write_text(json.dumps(reports, indent=2) + "\n")
    (OUT / "calibration.md").write_text("\n".join(tables))
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
