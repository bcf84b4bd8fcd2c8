"""Estimates over all traffic from the feedback log's recorded decisions, of which only
some carry a label: the tiers' shares, Tier-1 accuracy with its interval, override
rates, top-label ECE with its reliability diagram, and PSI against the calibrator
artefact's reference histograms. Pure: no I/O and no clock; the caller brings the
observations and stores or draws what comes out.

The estimator: post-stratified inverse-probability weighting, Hajek within strata.

1. A stratum is a pair (tier, reason): AUTOMATED/THRESHOLD, AUTOMATED/AUDIT_SAMPLE,
   HUMAN_ASSISTED/THRESHOLD, HUMAN_PRIMARY/RULE and so on.
2. A recorded decision i was recorded with a known probability pi_i (1 for an
   escalated decision, audit samples included; the decision-record sampling rate for
   any other automated one) and stands for d_i = 1 / pi_i decisions. A stratum's size
   is estimated by N_s = sum of d_i over its recorded decisions (Horvitz-Thompson),
   all traffic by N = sum of N_s.
3. Labels are taken to be missing at random within a stratum. A labelled decision
   weighs w_i = d_i * N_s / L_s, where L_s = sum of d_j over the stratum's labelled
   decisions, so that a stratum's labelled decisions weigh N_s in all; an unlabelled
   one weighs 0. Where a stratum's decisions share one pi, as they do within one
   policy revision, this is w_i = N_s / n_s with n_s the stratum's labelled count;
   where the sampling rate changed within the window, the factor d_i keeps each
   period in its proportion.
4. An estimate of a mean over all traffic, or over a tier, is the Hajek ratio
   sum w_i y_i / sum w_i over the labelled decisions there.
5. A stratum with recorded decisions and no label has no weight to give: it is left
   out of every estimate, named in ``Health.unseen``, and its N_s / N is
   ``Health.unseen_share``; the estimates then stand for the rest of the traffic.

Tier shares and the PSI histograms count every recorded decision, labelled or not,
with d_i. Tier-1 accuracy is the weighted share of AUTOMATED decisions (both reasons)
whose label is the predicted class; its two-sided Clopper-Pearson interval is taken
on Kish's effective sample size of those weights, n_eff = (sum w)^2 / sum w^2, with
accuracy * n_eff hits of n_eff trials. A tier's override rate is its weighted share
of labels that differ from the predicted class. ECE is top-label ECE over
equal-width bins (``calibrators.metrics``) with the same weights. Per model, domain,
arm or group (``by``), the strata are formed within the group.

Checked by ``tests/unit/monitor/test_estimates.py`` on simulated traffic of known
calibration (200,000 decisions, thresholds 0.9 and 0.6, audit rate 0.05, record rate
0.1, outcomes for 30% of the recorded automated decisions that were not audited):
on each of 20 seeds, accuracy, Tier-1 accuracy and ECE lie within 0.02 of the
population's, and their mean error over the seeds within 0.005, where the unweighted
accuracy and ECE of the labelled decisions are off by more than 0.02 (escalations are
over-represented among them). Unweighted Tier-1 accuracy happens to be unbiased
there, both AUTOMATED strata being random samples of the automated decisions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from calibrators.check import interval
from calibrators.metrics import ECE_BINS, Bins, equal_width_bins
from monitor.observations import Observation
from sidecar.core.drift import psi
from sidecar.core.thresholds import Tier

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

GroupKey = Literal["model", "domain", "arm", "group"]

AUTOMATED = Tier.AUTOMATED.name
TIERS = tuple(tier.name for tier in Tier)


class Stratum(NamedTuple):
    tier: str
    reason: str


@dataclass(frozen=True)
class Health:
    """What the recorded decisions say about all traffic (see the module docstring).

    Estimates with no labelled decision to stand on are None; ``tier1_effective`` is
    Kish's effective number of labelled AUTOMATED decisions behind the interval."""

    decisions: float  # estimated decisions made: sum of 1 / pi over the recorded ones
    recorded: int
    labelled: int
    tier_shares: dict[str, float]  # every tier's estimated share of the decisions
    accuracy: float | None  # over all traffic in strata with labels
    tier1_accuracy: float | None
    tier1_interval: tuple[float, float] | None
    tier1_effective: float
    override_rates: dict[str, float]  # per tier with labels
    ece: float | None
    reliability: Bins | None  # per-bin labelled rows, weighted confidence, accuracy, mass
    unseen: tuple[Stratum, ...]  # strata with recorded decisions and no label
    unseen_share: float  # their estimated share of the decisions


@dataclass(frozen=True)
class _Recorded:
    """The observations as columns; ``stratum`` indexes ``strata``."""

    confidence: Floats
    predicted: Ints
    labelled: Bools
    hit: Bools  # labelled with the predicted class
    expansion: Floats  # 1 / inclusion probability
    stratum: Ints
    strata: tuple[Stratum, ...]

    def in_tier(self, tier: str) -> Bools:
        member = np.array([s.tier == tier for s in self.strata], dtype=np.bool_)
        selected: Bools = member[self.stratum]
        return selected


def weights(observations: Sequence[Observation]) -> Floats:
    """Each observation's weight: w_i = d_i * N_s / L_s when labelled, 0 otherwise."""
    return _weights(_columns(observations))


def health(
    observations: Sequence[Observation], *, bins: int = ECE_BINS, level: float = 0.95
) -> Health:
    """The estimates over all traffic, ECE with bins equal-width bins, the Tier-1
    interval at confidence level."""
    if bins < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"bins must be at least 1 and level in (0, 1); got {bins}, {level}")
    recorded = _columns(observations)
    w = _weights(recorded)
    automated = recorded.in_tier(AUTOMATED)
    tier1, bounds, effective = _tier1(w[automated], recorded.hit[automated], level)
    reliability = _reliability(recorded, w, bins)
    unseen, unseen_share = _unseen(recorded)
    return Health(
        decisions=float(recorded.expansion.sum()),
        recorded=len(observations),
        labelled=int(recorded.labelled.sum()),
        tier_shares=_tier_shares(recorded),
        accuracy=_mean(recorded.hit, w),
        tier1_accuracy=tier1,
        tier1_interval=bounds,
        tier1_effective=effective,
        override_rates=_override_rates(recorded, w),
        ece=None if reliability is None else reliability.weighted_gap(),
        reliability=reliability,
        unseen=unseen,
        unseen_share=unseen_share,
    )


def by(observations: Iterable[Observation], key: GroupKey) -> dict[str, list[Observation]]:
    """The observations grouped by the value of one attribute, in order of the value."""
    value = attrgetter(key)
    groups: dict[str, list[Observation]] = {}
    for observation in observations:
        groups.setdefault(str(value(observation)), []).append(observation)
    return dict(sorted(groups.items()))


def confidence_psi(
    observations: Sequence[Observation], edges: Sequence[float], reference_counts: Sequence[float]
) -> float:
    """PSI (``sidecar.core.drift.psi``) of the decisions' confidence, each counted d_i
    times, against the reference counts over the same edges (the calibrator artefact's
    histogram), binned as the sidecar's drift guard bins: [e_i, e_i+1), the end bins
    open outwards. 0.0 without decisions, as the guard's before its window fills."""
    if len(reference_counts) != len(edges) - 1:
        raise ValueError(f"{len(edges)} edges for {len(reference_counts)} reference counts")
    if not observations:
        return 0.0
    recorded = _columns(observations)
    index = np.searchsorted(np.asarray(edges[1:-1], dtype=np.float64), recorded.confidence, "right")
    observed = np.bincount(index, weights=recorded.expansion, minlength=len(reference_counts))
    return psi(reference_counts, observed.tolist())


def class_psi(
    observations: Sequence[Observation], reference_class_counts: Sequence[float]
) -> float:
    """PSI of the predicted classes, each decision counted d_i times, against the
    reference counts per class; a class beyond the reference's counts 0 there. 0.0
    without decisions."""
    if not observations:
        return 0.0
    return psi(*_class_mixes(observations, reference_class_counts))


def class_shift(
    observations: Sequence[Observation], reference_class_counts: Sequence[float]
) -> float:
    """The class-prior shift estimate: total variation between the predicted classes'
    mix (each decision counted d_i times) and the reference's, the share of decisions
    whose class the shift moved (as the sidecar's guard reports it). 0.0 without
    decisions."""
    if not observations:
        return 0.0
    reference, observed = _class_mixes(observations, reference_class_counts)
    return float(0.5 * np.abs(observed / observed.sum() - reference / reference.sum()).sum())


def _class_mixes(
    observations: Sequence[Observation], reference_class_counts: Sequence[float]
) -> tuple[Floats, Floats]:
    """(reference, observed) counts over the same classes."""
    recorded = _columns(observations)
    observed: Floats = np.bincount(
        recorded.predicted, weights=recorded.expansion, minlength=len(reference_class_counts)
    ).astype(np.float64)
    reference = np.zeros(observed.shape[0])
    reference[: len(reference_class_counts)] = reference_class_counts
    return reference, observed


def _columns(observations: Sequence[Observation]) -> _Recorded:
    rows = len(observations)
    index: dict[Stratum, int] = {}
    stratum = np.fromiter(
        (index.setdefault(Stratum(o.tier, o.reason), len(index)) for o in observations),
        dtype=np.int64,
        count=rows,
    )
    probability = np.fromiter(
        (o.inclusion_probability for o in observations), dtype=np.float64, count=rows
    )
    if not np.all((probability > 0.0) & (probability <= 1.0)):
        raise ValueError("every inclusion probability must lie in (0, 1]")
    predicted = np.fromiter((o.predicted_class for o in observations), dtype=np.int64, count=rows)
    label = np.fromiter(
        (-1 if o.label is None else o.label for o in observations), dtype=np.int64, count=rows
    )
    labelled = np.fromiter((o.label is not None for o in observations), dtype=np.bool_, count=rows)
    return _Recorded(
        confidence=np.fromiter((o.confidence for o in observations), dtype=np.float64, count=rows),
        predicted=predicted,
        labelled=labelled,
        hit=labelled & (label == predicted),
        expansion=1.0 / probability,
        stratum=stratum,
        strata=tuple(index),
    )


def _stratum_sums(recorded: _Recorded, values: Floats) -> Floats:
    sums = np.bincount(recorded.stratum, weights=values, minlength=len(recorded.strata))
    return sums.astype(np.float64)  # bincount's stub types the sums as integers


def _weights(recorded: _Recorded) -> Floats:
    labelled = np.where(recorded.labelled, recorded.expansion, 0.0)
    size = _stratum_sums(recorded, recorded.expansion)
    seen = _stratum_sums(recorded, labelled)
    scale = np.divide(size, seen, out=np.zeros_like(size), where=seen > 0)
    w: Floats = labelled * scale[recorded.stratum]
    return w


def _mean(values: Bools, w: Floats) -> float | None:
    total = float(w.sum())
    return float(w[values].sum()) / total if total > 0 else None


def _tier1(
    w: Floats, hit: Bools, level: float
) -> tuple[float | None, tuple[float, float] | None, float]:
    accuracy = _mean(hit, w)
    if accuracy is None:
        return None, None, 0.0
    effective = float(w.sum()) ** 2 / float(np.square(w).sum())
    return accuracy, interval(accuracy * effective, effective, level), effective


def _reliability(recorded: _Recorded, w: Floats, bins: int) -> Bins | None:
    kept = w > 0
    if not kept.any():
        return None
    return equal_width_bins(recorded.confidence[kept], recorded.hit[kept], bins, w[kept])


def _tier_shares(recorded: _Recorded) -> dict[str, float]:
    total = float(recorded.expansion.sum())
    names = dict.fromkeys([*TIERS, *(s.tier for s in recorded.strata)])
    return {
        name: float(recorded.expansion[recorded.in_tier(name)].sum()) / total if total else 0.0
        for name in names
    }


def _override_rates(recorded: _Recorded, w: Floats) -> dict[str, float]:
    rates: dict[str, float] = {}
    for name in dict.fromkeys(s.tier for s in recorded.strata):
        tier = recorded.in_tier(name)
        accuracy = _mean(recorded.hit[tier], w[tier])
        if accuracy is not None:
            rates[name] = 1.0 - accuracy
    return rates


def _unseen(recorded: _Recorded) -> tuple[tuple[Stratum, ...], float]:
    size = _stratum_sums(recorded, recorded.expansion)
    seen = _stratum_sums(recorded, np.where(recorded.labelled, 1.0, 0.0))
    total = float(size.sum())
    dark = seen == 0
    share = float(size[dark].sum()) / total if total else 0.0
    return tuple(s for s, d in zip(recorded.strata, dark, strict=True) if d), share
