"""Whether an experiment arm's Tier-1 error rate is worse (or better) than control's,
by a test that stays valid however often it is looked at. The monitor looks at the
growing counts every few seconds, forever; a fixed-sample test looked at that often
would sooner or later halt a harmless arm. Pure: counts in, a ``Comparison`` out; no
I/O, no clock and no state.

The construction: the mixture sequential probability ratio test (mSPRT) of Johari,
Pekelis and Walsh, "Always valid inference: continuous monitoring of A/B tests",
Operations Research 70(3), 2022, for the difference of two Bernoulli rates, with the
normal mixing distribution N(0, tau^2) on the difference and a plug-in variance. In
closed form it is the same boundary as the Gaussian-mixture asymptotic confidence
sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central
limit theory and asymptotic confidence sequences", Annals of Statistics 52(6), 2024.
With ``d = errors_arm / trials_arm - errors_control / trials_control`` and ``V(t)``
the variance of ``d`` when the true difference is ``t``, the mixture likelihood ratio
against the hypothesis "the difference is t" is

    Lambda(t) = sqrt(V / (V + tau^2)) * exp(tau^2 (d - t)^2 / (2 V (V + tau^2)))

Under that hypothesis Lambda(t) is (asymptotically) a nonnegative martingale with
mean 1, so by Ville's inequality the chance that it EVER reaches 1/alpha is at most
alpha. Hence:

* ``p_value = min(1, 1 / Lambda(0))``, with V the plug-in variance under that null:
  the pooled rate p over both arms, ``V = p (1 - p) (1/trials_arm + 1/trials_control)``.
  ``harmful`` is p <= alpha with d > 0, ``better`` p <= alpha with d < 0; the two
  together happen under the null with probability at most alpha, at any look.
* The confidence interval is every t with Lambda(t) < 1/alpha, V(t) from the
  maximum-likelihood rates whose difference is t (the variance of Miettinen and
  Nurminen's score interval). At t = 0 those are the pooled rate, so the interval
  leaves out 0 exactly when p <= alpha; it is found by bisection.

One look's p-value is already valid at any stopping time, however the looks were
chosen: a caller may keep the running minimum over looks (the mSPRT's p-value as the
paper defines it), but a restarted monitor loses only that minimum, never validity.

Assumptions. Units (checked Tier-1 decisions) are independent; an arm's assignment
does not depend on the outcome and the split stays fixed (the stable hash), so each
arm's rate is a mean of independent Bernoulli trials. The martingale property holds
only asymptotically, through the normal approximation and the plug-in variance, so
no inference is made (p = 1, the interval [-1, 1]) until each arm has ``min_trials``
trials and the smaller arm expects at least ``MIN_EXPECTED_COUNT`` errors and as
many correct decisions at the pooled rate: the usual condition for the normal
approximation to the binomial, without which a small arm's first error at a rare
rate reads as strong evidence. Counts may be weighted (effective) counts.

``tau`` is the standard deviation of the mixing distribution, in error-rate units:
the size of difference the test is tuned to find soonest. Differences much smaller
than tau take longer to show than under a smaller tau, much larger ones a little
longer than under a larger one; validity holds for any tau. The default, 0.02, suits
Tier-1 error rates of a few percent, where a harmful arm adds a point or a few."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

TEST = "mSPRT, normal mixture on the difference (Johari, Pekelis and Walsh 2022)"
DEFAULT_ALPHA = 0.05
DEFAULT_TAU = 0.02
DEFAULT_MIN_TRIALS = 30
MIN_EXPECTED_COUNT = 5.0  # errors and correct decisions in the smaller arm, pooled rate
_BISECTION_STEPS = 50  # halves a unit interval to about 1e-15


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """One arm's checked Tier-1 decisions (``trials``) and the wrong ones (``errors``).

    Floats, so that weighted or effective counts can be passed."""

    name: str
    trials: float
    errors: float

    def __post_init__(self) -> None:
        _check_counts(self.trials, self.errors, "trials", "errors", f"arm {self.name!r}: ")

    @property
    def error_rate(self) -> float:
        """errors / trials; NaN while there are no trials."""
        return self.errors / self.trials if self.trials > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Comparison:
    """One look at an arm against control (see the module docstring).

    ``difference`` is arm minus control; ``ci_low`` and ``ci_high`` bound it with
    always-valid confidence 1 - alpha, [-1, 1] while no inference is made."""

    control: ArmCounts
    arm: ArmCounts
    control_error_rate: float
    arm_error_rate: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    tau: float
    harmful: bool  # significantly higher error rate than control's: halt the arm
    better: bool  # significantly lower: a candidate for a human to promote

    def as_evidence(self) -> dict[str, str | float | bool]:
        """Flat fields for a finding's evidence: the test, each arm's name and counts,
        then every other field by its name."""
        evidence: dict[str, str | float | bool] = {"test": TEST}
        for side, counts in (("control", self.control), ("arm", self.arm)):
            evidence |= {
                side: counts.name,
                f"{side}_trials": counts.trials,
                f"{side}_errors": counts.errors,
            }
        return evidence | {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in evidence
        }


def compare(
    control: ArmCounts,
    arm: ArmCounts,
    *,
    alpha: float = DEFAULT_ALPHA,
    tau: float = DEFAULT_TAU,
    min_trials: int = DEFAULT_MIN_TRIALS,
) -> Comparison:
    """Test the arm's error rate against control's at this look."""
    _check_parameters(alpha, tau, min_trials)
    p, ready = _test(
        *(
            np.asarray(c, dtype=np.float64)
            for c in (control.trials, control.errors, arm.trials, arm.errors)
        ),
        tau=tau,
        min_trials=min_trials,
    )
    difference = arm.error_rate - control.error_rate
    ci_low, ci_high = _interval(control, arm, difference, alpha, tau) if ready else (-1.0, 1.0)
    significant = float(p) <= alpha
    return Comparison(
        control=control,
        arm=arm,
        control_error_rate=control.error_rate,
        arm_error_rate=arm.error_rate,
        difference=difference,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=float(p),
        alpha=alpha,
        tau=tau,
        harmful=significant and difference > 0,
        better=significant and difference < 0,
    )


def p_values(
    control_trials: npt.ArrayLike,
    control_errors: npt.ArrayLike,
    arm_trials: npt.ArrayLike,
    arm_errors: npt.ArrayLike,
    *,
    tau: float = DEFAULT_TAU,
    min_trials: int = DEFAULT_MIN_TRIALS,
) -> Floats:
    """``compare``'s p-value over arrays of counts broadcast together: for replaying a
    history of looks at once, and for simulating the test's error rates."""
    _check_parameters(DEFAULT_ALPHA, tau, min_trials)
    nc, ec, na, ea = np.broadcast_arrays(
        *(np.asarray(c, dtype=np.float64) for c in (control_trials, control_errors)),
        *(np.asarray(c, dtype=np.float64) for c in (arm_trials, arm_errors)),
    )
    _check_counts(nc, ec, "control_trials", "control_errors")
    _check_counts(na, ea, "arm_trials", "arm_errors")
    p, _ = _test(nc, ec, na, ea, tau=tau, min_trials=min_trials)
    return p


def _test(
    nc: Floats, ec: Floats, na: Floats, ea: Floats, *, tau: float, min_trials: int
) -> tuple[Floats, Bools]:
    """The p-value of d = 0 and whether inference is made (see the module docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # not ready: 0/0, masked below
        pooled = (ec + ea) / (nc + na)
        variance = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / na)
        log_lr = _log_likelihood_ratio(ea / na - ec / nc, variance, tau)
        p = np.minimum(1.0, np.exp(-log_lr))
        smaller = np.minimum(nc, na)
        ready: Bools = (
            (smaller >= max(min_trials, 1))
            & (smaller * pooled >= MIN_EXPECTED_COUNT)
            & (smaller * (1.0 - pooled) >= MIN_EXPECTED_COUNT)
        )
    result: Floats = np.where(ready, p, 1.0)
    return result, ready


def _log_likelihood_ratio(distance: Floats, variance: Floats, tau: float) -> Floats:
    """log Lambda for a distance d - t and its variance V > 0."""
    tau2 = tau * tau
    log_lr: Floats = -0.5 * np.log1p(tau2 / variance) + tau2 * distance**2 / (
        2.0 * variance * (variance + tau2)
    )
    return log_lr


def _interval(
    control: ArmCounts, arm: ArmCounts, difference: float, alpha: float, tau: float
) -> tuple[float, float]:
    """Every t with Lambda(t) < 1/alpha, V(t) from the rates constrained to t."""
    threshold = math.log(1.0 / alpha)

    def rejected(t: float) -> bool:
        rate_c, rate_a = _constrained_rates(control, arm, t)
        variance = rate_c * (1.0 - rate_c) / control.trials + rate_a * (1.0 - rate_a) / arm.trials
        if variance <= 0.0:  # both rates at 0 or 1: only d itself is possible
            return t != difference
        log_lr = _log_likelihood_ratio(np.asarray(difference - t), np.asarray(variance), tau)
        return bool(log_lr >= threshold)

    return _edge(rejected, -1.0, difference), _edge(rejected, 1.0, difference)


def _edge(rejected: Callable[[float], bool], outside: float, inside: float) -> float:
    """Bisect between a rejected end and the estimate; return the last rejected point,
    so the interval errs wide by at most 1e-15 (the end itself when nothing is)."""
    for _ in range(_BISECTION_STEPS):
        middle = (outside + inside) / 2.0
        if rejected(middle):
            outside = middle
        else:
            inside = middle
    return outside


def _constrained_rates(control: ArmCounts, arm: ArmCounts, t: float) -> tuple[float, float]:
    """The maximum-likelihood (control, arm) error rates whose difference is t: the
    joint log-likelihood is concave in control's rate, so bisect on its slope."""
    low, high = max(0.0, -t), min(1.0, 1.0 - t)
    for _ in range(_BISECTION_STEPS):
        rate = (low + high) / 2.0
        if _slope(control, rate) + _slope(arm, rate + t) > 0.0:
            low = rate
        else:
            high = rate
    rate = (low + high) / 2.0
    return rate, rate + t


def _slope(counts: ArmCounts, rate: float) -> float:
    """d/d rate of errors log(rate) + (trials - errors) log(1 - rate), 0 log 0 = 0."""
    slope = 0.0
    if counts.errors > 0:
        slope += counts.errors / rate if rate > 0.0 else math.inf
    if counts.trials > counts.errors:
        slope -= (counts.trials - counts.errors) / (1.0 - rate) if rate < 1.0 else math.inf
    return slope


def _check_parameters(alpha: float, tau: float, min_trials: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not 0.0 < tau < math.inf:
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if min_trials < 0:
        raise ValueError(f"min_trials must be >= 0, got {min_trials!r}")


def _check_counts(
    trials: float | Floats,
    errors: float | Floats,
    trials_name: str,
    errors_name: str,
    where: str = "",
) -> None:
    """0 <= errors <= trials < inf, naming the argument that breaks it (NaN breaks all)."""
    if not np.all((trials >= 0.0) & (trials < math.inf)):
        raise ValueError(f"{where}{trials_name} must be finite and >= 0, got {trials!r}")
    if not np.all((errors >= 0.0) & (errors <= trials)):
        raise ValueError(
            f"{where}{errors_name} must lie between 0 and {trials_name}, got {errors!r}"
            f" with {trials_name} {trials!r}"
        )
