"""Reliability diagrams as PNG: per equal-width bin, accuracy against mean
confidence, the gap to the diagonal shaded, and below it how many rows each bin
holds. One column per curve (for example raw and calibrated) so they compare at a
glance. Uses matplotlib's object API, never pyplot's global state."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from calibrators.metrics import ECE_BINS, Floats, Ints, ece, top_label_bins


def reliability_diagram(
    curves: Mapping[str, Floats], labels: Ints, path: Path, title: str, bins: int = ECE_BINS
) -> Path:
    """Write the diagram of each named probability table [N, C] to path."""
    fig = Figure(figsize=(4.2 * len(curves), 5.6), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(2, len(curves), squeeze=False, height_ratios=[3, 1], sharex=True)
    width = 1.0 / bins
    for column, (name, probs) in enumerate(curves.items()):
        b = top_label_bins(probs, labels, bins)
        left = b.edges[:-1]
        filled = b.count > 0
        top, bottom = axes[0][column], axes[1][column]
        top.bar(
            left[filled],
            b.accuracy[filled],
            width,
            align="edge",
            label="accuracy",
            color="#4c72b0",
            edgecolor="white",
        )
        gap_low = np.minimum(b.accuracy, b.confidence)[filled]
        top.bar(
            left[filled],
            np.abs(b.accuracy - b.confidence)[filled],
            width,
            bottom=gap_low,
            align="edge",
            label="gap",
            color="#dd8452",
            alpha=0.55,
            edgecolor="none",
        )
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        top.set_title(f"{name}: ECE {ece(probs, labels):.2%}")
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.legend(loc="upper left", fontsize="small")
        bottom.bar(left, b.count, width, align="edge", color="#55a868", edgecolor="white")
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("confidence")
        bottom.set_ylabel("rows")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
