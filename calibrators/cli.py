"""``hitl calibrate``: fit, evaluate, thresholds, export, compare.

Every command reads labelled model outputs (``calibrators.data``: .npz, .npy with
--labels, .csv, .jsonl; logits or probabilities, optional domains), prints a JSON
summary on stdout, shows progress on stderr for long work, and exits 2 with a
message naming the problem when an input or option is unusable (never a traceback).
``thresholds`` exits 3, with JSON giving the best bound reached and what would make
a threshold possible, when no threshold can be defended. Heavy imports happen inside
the commands, so ``hitl --help`` stays fast and the sidecar never loads scipy."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.errors import DataError

if TYPE_CHECKING:
    from calibrators.data import Dataset
    from calibrators.metrics import Floats

DEFAULT_TARGET = 0.99
DEFAULT_LOW_TARGET = 0.80
DEFAULT_LEVEL = 0.95
NO_THRESHOLD = 3  # the exit code when no threshold can be defended
# The methods fit can use (calibrators.methods.METHODS, named here so --help needs no
# scipy); a test keeps the two in step.
METHOD_NAMES = ("temperature", "vector", "platt", "isotonic", "isotonic-ovr", "histogram")


class HELP(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it has none or says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default in (None, False, argparse.SUPPRESS)
        if unset or action.required or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def _share(text: str) -> float:
    """An accuracy target: a number strictly between 0 and 1."""
    value = _number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie strictly between 0 and 1")
    return value


def _level(text: str) -> float:
    """A confidence level: at least 0.5 and below 1 (0.95, not 95)."""
    value = _number(text)
    if not 0.5 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0.5, 1), e.g. 0.95")
    return value


def _folds(text: str) -> int:
    return _whole_number(text, 2, math.inf, "cross-validation needs at least 2 folds")


def _bins(text: str) -> int:
    return _whole_number(text, 2, 1000, "bins must be 2 to 1000")


def _whole_number(text: str, least: int, most: float, why: str) -> int:
    """text as a whole number from least to most; outside them, an error saying why."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not least <= value <= most:
        raise argparse.ArgumentTypeError(f"{text!r}: {why}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def add_commands(commands: Any) -> Any:
    """Add ``calibrate`` and its actions to the ``hitl`` sub-command parser; returns
    its actions, to which ``hitl calibrate publish`` (a registry client) is added."""
    calibrate = commands.add_parser("calibrate", help="fit, evaluate and export calibrators")
    actions = calibrate.add_subparsers(required=True, metavar="ACTION")

    fit = actions.add_parser(
        "fit", help="fit a calibrator (auto-selected by default)", formatter_class=HELP
    )
    _data_arguments(fit)
    fit.add_argument(
        "--method",
        default="auto",
        choices=("auto", *METHOD_NAMES),
        help="auto: the method that automates most at --target out of fold (NLL breaks"
        " ties; one that changes predicted classes and loses accuracy is never chosen)",
    )
    fit.add_argument("--out", required=True, type=Path, help="the fit, as JSON")
    fit.add_argument("--onnx", type=Path, help="also export the artefact here")
    _export_arguments(fit)
    fit.add_argument("--folds", type=_folds, default=5, help="cross-validation folds")
    fit.add_argument("--seed", type=int, default=0, help="of the folds")
    fit.add_argument(
        "--thresholds",
        type=Path,
        metavar="FRAGMENT",
        help="also recommend t_high / t_low, bounded on cross-fitted confidences (each row"
        " calibrated by a fit on the other folds), and write the policy fragment here",
    )
    _threshold_arguments(fit)
    fit.set_defaults(run=run_fit)

    export = actions.add_parser(
        "export", help="export a saved fit as an ONNX artefact", formatter_class=HELP
    )
    export.add_argument("--fit", required=True, type=Path, help="JSON written by fit")
    export.add_argument("--out", required=True, type=Path, help="the .onnx to write")
    _export_arguments(export)
    export.set_defaults(run=run_export)

    evaluate = actions.add_parser(
        "evaluate", help="metrics and reliability diagrams", formatter_class=HELP
    )
    _data_arguments(evaluate)
    _calibrator_argument(evaluate, required=False)
    evaluate.add_argument(
        "--bins", type=_bins, default=15, help="bins of the ECE, adaptive ECE and MCE"
    )
    evaluate.add_argument("--out", type=Path, help="write the JSON report here too")
    evaluate.add_argument("--plots", type=Path, help="directory for reliability PNGs")
    evaluate.set_defaults(run=run_evaluate)

    thresholds = actions.add_parser(
        "thresholds", help="recommend t_high / t_low", formatter_class=HELP
    )
    _data_arguments(thresholds)
    _calibrator_argument(thresholds, required=False)
    _threshold_arguments(thresholds)
    thresholds.add_argument("--out", type=Path, help="write the policy fragment (YAML) here")
    thresholds.set_defaults(run=run_thresholds)

    _add_check(actions)
    _add_convert(actions)
    _add_compare(actions)
    return actions


def _add_check(actions: Any) -> None:
    check = actions.add_parser(
        "check",
        help="what a policy's thresholds do on a labelled test file, against the target",
        formatter_class=HELP,
    )
    _data_arguments(check)
    check.add_argument("--policy", required=True, type=Path, help="the policy file")
    check.add_argument("--model", help="the model to check (default: the policy's only one)")
    check.add_argument(
        "--target", type=_share, help="Tier-1 accuracy (default: the model's target_tier1_accuracy)"
    )
    check.add_argument("--level", type=_level, default=DEFAULT_LEVEL, help="interval level")
    check.add_argument("--out", type=Path, help="write the JSON report here too")
    check.set_defaults(run=run_check)


def _add_convert(actions: Any) -> None:
    convert = actions.add_parser(
        "convert",
        help="turn a pickled (logits, labels) pair into an .npz the other commands read",
        formatter_class=HELP,
    )
    convert.add_argument("pickle", type=Path, help="a pickle of (logits, labels)")
    convert.add_argument("--out", required=True, type=Path, help="the .npz to write")
    convert.add_argument(
        "--trust-pickle",
        action="store_true",
        help="required: unpickling runs whatever code the file holds",
    )
    convert.set_defaults(run=run_convert)


def _add_compare(actions: Any) -> None:
    compare = actions.add_parser(
        "compare", help="every method on a seeded half / half split", formatter_class=HELP
    )
    _data_arguments(compare)
    compare.add_argument("--methods", help="comma-separated (default: all that apply)")
    compare.add_argument(
        "--test",
        type=Path,
        help="a labelled test file to judge on, all of --data fitting (default: a seeded"
        " half of --data is held out)",
    )
    compare.add_argument("--target", type=_share, default=DEFAULT_TARGET, help="Tier-1 accuracy")
    compare.add_argument("--level", type=_level, default=DEFAULT_LEVEL, help="confidence level")
    compare.add_argument("--seed", type=int, default=0, help="of the split")
    compare.add_argument("--out", type=Path, help="write the JSON report here too")
    compare.set_defaults(run=run_compare)


def _threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=_share, default=DEFAULT_TARGET, help="Tier-1 accuracy")
    parser.add_argument(
        "--low-target",
        type=_share,
        default=DEFAULT_LOW_TARGET,
        help="accuracy below which the model's answer is not shown as a suggestion (t_low)",
    )
    parser.add_argument("--level", type=_level, default=DEFAULT_LEVEL, help="confidence level")
    parser.add_argument("--model", default="model", help="model name in the fragment")
    parser.add_argument(
        "--production",
        type=Path,
        help="unlabelled outputs production sent (.npz or .npy): bound for production's"
        " class mix, estimated from them (label shift); without it the guarantee assumes"
        " production's mix is the labelled rows'",
    )


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help=".npz, .npy, .csv or .jsonl")
    parser.add_argument("--labels", type=Path, help="labels .npy, with a .npy --data")
    parser.add_argument("--domains", type=Path, help="domains .npy, with a .npy --data")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", help="calibration version (default: method, time, data)")
    parser.add_argument("--class-labels", help="comma-separated class names (default 0..C-1)")


def _calibrator_argument(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--calibrator",
        type=Path,
        required=required,
        help="a fit (.json) or an exported artefact (.onnx)"
        + ("" if required else "; none: the model's raw softmax confidence, as a baseline"),
    )


def _load(args: argparse.Namespace) -> Dataset:
    from calibrators.data import load_dataset

    return load_dataset(args.data, args.labels, args.domains)


def _print(summary: dict[str, Any], out: Path | None = None) -> None:
    text = json.dumps(summary, indent=2, allow_nan=False, default=str)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    print(text)


def _class_labels(args: argparse.Namespace) -> list[str] | None:
    return None if not args.class_labels else args.class_labels.split(",")


def run_fit(args: argparse.Namespace) -> int:
    from calibrators.export import export_artefact
    from calibrators.fit import cross_fitted, fit_calibrator, save_fit

    data = _load(args)
    result = fit_calibrator(data, args.method, args.folds, args.seed, True, args.target, args.level)
    save_fit(result, args.out)
    summary: dict[str, Any] = {
        "fit": str(args.out),
        "method": result.method,
        "rows": result.rows,
        **_weighted(data),
        "ece_before": result.ece_before,
        "ece_after": result.ece_after,
        "parameters": _short(result.calibrator.parameters()),
    }
    if result.selection is not None:
        summary["selection"] = asdict(result.selection)
    if args.onnx is not None:
        exported = export_artefact(result, args.onnx, args.version, _class_labels(args))
        summary["artefact"] = _artefact_summary(exported)
    if args.thresholds is not None:
        probs = cross_fitted(data, result.method, args.folds, args.seed)
        recommended = _recommend(args, data, probs, args.thresholds, result.calibrator.predict)
        if recommended is None:
            return NO_THRESHOLD
        summary["thresholds"] = recommended
    _print(summary)
    return 0


def _unweighted(command: str, *datasets: Dataset | None) -> None:
    """Warn that command counts every row once when rows have weights."""
    if any(data is not None and data.weights is not None for data in datasets):
        print(
            f"hitl: warning: {command} counts every row once; fit, thresholds and check"
            " use the rows' weights",
            file=sys.stderr,
        )


def _weighted(data: Dataset) -> dict[str, Any]:
    """For rows with weights: that fits, scores and bounds used them, and how many
    unweighted rows they are worth (Kish's effective sample size)."""
    if data.weights is None:
        return {}
    effective = float(data.weights.sum() ** 2 / (data.weights**2).sum())
    return {"weighted": True, "effective_rows": round(effective, 1)}


def run_export(args: argparse.Namespace) -> int:
    from calibrators.export import export_artefact
    from calibrators.fit import load_fit

    exported = export_artefact(load_fit(args.fit), args.out, args.version, _class_labels(args))
    _print(_artefact_summary(exported))
    return 0


def _artefact_summary(exported: Any) -> dict[str, Any]:
    """What the policy's calibrator entry needs, ready to paste."""
    return {
        "path": str(exported.path),
        "sha256": exported.sha256,
        "version": exported.metadata.version,
        "method": exported.metadata.method,
    }


def _short(parameters: dict[str, Any]) -> dict[str, Any]:
    """Scalars as they are; long lists summarised (the full fit is in the JSON file)."""
    return {
        k: v if not isinstance(v, list) else f"[{len(v)} values]" for k, v in parameters.items()
    }


def _predict(path: Path, data: Dataset) -> tuple[Floats, str, Callable[[Floats], Floats]]:
    """data's calibrated probabilities, the fingerprint of the data the calibrator was
    fitted on, and the calibrator itself (logits -> probabilities)."""
    from calibrators.export import OnnxPredictor
    from calibrators.fit import load_fit

    predictor: Any
    if path.suffix == ".onnx":
        predictor = OnnxPredictor(path)
        fitted_on = predictor.dataset_fingerprint
    else:
        fit = load_fit(path)
        predictor, fitted_on = fit.calibrator, fit.dataset_fingerprint
    if predictor.class_count != data.classes:
        raise DataError(
            str(path), f"calibrates {predictor.class_count} classes; the data has {data.classes}"
        )
    probs: Floats = predictor.predict(data.logits)
    return probs, fitted_on, predictor.predict


def run_evaluate(args: argparse.Namespace) -> int:
    from calibrators.metrics import by_segment, measure, softmax
    from calibrators.plots import reliability_diagram

    data = _load(args)
    _unweighted("evaluate", data)
    curves = {"raw": softmax(data.logits)}
    if args.calibrator is not None:
        curves["calibrated"] = _predict(args.calibrator, data)[0]
    report: dict[str, Any] = {"data": str(args.data), "rows": data.rows}
    report["bins"] = args.bins
    for name, probs in curves.items():
        report[name] = asdict(measure(probs, data.labels, args.bins))
        if data.domains is not None:
            segments = by_segment(probs, data.labels, data.domains, args.bins)
            report[f"{name}_by_domain"] = {k: asdict(m) for k, m in segments.items()}
    if args.plots is not None:
        plot = reliability_diagram(
            curves, data.labels, args.plots / "reliability.png", args.data.name
        )
        report["plots"] = [str(plot)]
        if data.domains is not None:
            for domain in sorted(set(data.domains.tolist())):
                rows = data.domains == domain
                path = args.plots / f"reliability-{_slug(domain)}.png"
                subset = {k: v[rows] for k, v in curves.items()}
                reliability_diagram(subset, data.labels[rows], path, f"domain {domain}")
                report["plots"].append(str(path))
    _print(report, args.out)
    return 0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "empty"


def run_thresholds(args: argparse.Namespace) -> int:
    from calibrators.metrics import softmax

    data = _load(args)
    calibrate: Callable[[Floats], Floats]
    if args.calibrator is None:  # a baseline: the model's raw softmax confidence
        probs, fitted_on, calibrate = softmax(data.logits), "", softmax
    else:
        probs, fitted_on, calibrate = _predict(args.calibrator, data)
    if fitted_on == data.fingerprint():
        raise DataError(
            str(args.data),
            "is the data the calibrator was fitted on: a bound there is optimistic (most of"
            " all for flexible methods). Bound on held-out rows (another file), or let"
            " `hitl calibrate fit --thresholds FRAGMENT` cross-fit",
        )
    recommended = _recommend(args, data, probs, args.out, calibrate)
    if recommended is None:
        return NO_THRESHOLD
    _print(recommended)
    return 0


def _recommend(
    args: argparse.Namespace,
    data: Dataset,
    probs: Floats,
    fragment_out: Path | None,
    calibrate: Callable[[Floats], Floats],
) -> dict[str, Any] | None:
    """Thresholds on calibrated probabilities that were not fitted on their rows, with
    the policy fragment (written to fragment_out), for production's class mix when
    --production gives its outputs (calibrate turns them into probabilities); None,
    after printing why and the best bound reached, when none can be defended."""
    import yaml

    from calibrators.shift import reweighted
    from calibrators.thresholds import ThresholdError, recommend_thresholds

    shifted, shift = _label_shift(args, data, calibrate)
    weights = reweighted(data.weights, shifted)
    correct = probs.argmax(axis=1) == data.labels
    try:
        report = recommend_thresholds(
            probs.max(axis=1),
            correct,
            args.target,
            args.low_target,
            args.level,
            data.domains,
            weights,
        )
    except ThresholdError as exc:
        print(f"hitl: {args.data}: no threshold can be defended: {exc}", file=sys.stderr)
        _print(_no_threshold(exc, args.target, args.level))
        return None
    for warning in report.warnings:
        print(f"hitl: warning: {warning}", file=sys.stderr)
    fragment = report.policy_fragment(args.model)
    if fragment_out is not None:
        fragment_out.parent.mkdir(parents=True, exist_ok=True)
        fragment_out.write_text(yaml.safe_dump(fragment, sort_keys=False), encoding="utf-8")
    return {
        "report": asdict(report),
        "policy_fragment": fragment,
        "label_shift": shift,
        **_weighted(data),
    }


def _label_shift(
    args: argparse.Namespace, data: Dataset, calibrate: Callable[[Floats], Floats]
) -> tuple[Floats | None, dict[str, Any]]:
    """The labelled rows' class weights for production's estimated mix (None without
    --production, with a warning that the guarantee then assumes no shift). The
    labelled mix is the rows' weighted one when they have weights."""

    from calibrators.data import load_outputs
    from calibrators.shift import shift_to, too_uncertain

    if args.production is None:
        print(
            "hitl: warning: the guarantee assumes production's class mix is the labelled"
            " rows'; give --production (its unlabelled outputs) to bound it for production's",
            file=sys.stderr,
        )
        return None, {"assumed": "production's class mix is the labelled rows'"}
    outputs = load_outputs(args.production, data.classes)
    shift, weights = shift_to(data.labels, data.weights, calibrate(outputs))
    if problem := too_uncertain(shift, data.rows):
        raise DataError(str(args.production), f"the label shift is too large to bound: {problem}")
    return weights, asdict(shift)


def _no_threshold(exc: Any, target: float, level: float) -> dict[str, Any]:
    """What the best threshold reached, and what would make one defensible."""
    from calibrators.thresholds import rows_needed

    return {
        "error": "no_threshold",
        "message": str(exc),
        "rows": exc.rows,
        "target": target,
        "level": level,
        "best_bound": round(exc.best_bound, 6),
        "best_bound_automates": round(exc.best_share, 6),
        "hint": (
            f"the best threshold bounds Tier-1 accuracy at {exc.best_bound:.4f}; a --target "
            f"at or below it, or more labelled rows (at least {rows_needed(target, level)} "
            "above the threshold), can be defended"
        ),
    }


def run_check(args: argparse.Namespace) -> int:
    """Exit 1 when a segment's Tier-1 interval lies wholly below the target."""
    from calibrators.check import check_thresholds
    from calibrators.export import OnnxPredictor
    from sidecar.policy.loader import parse_policy_bytes

    try:
        policy = parse_policy_bytes(args.policy.read_bytes(), str(args.policy))
    except OSError as exc:
        raise DataError(str(args.policy), exc.strerror or str(exc)) from exc
    names = sorted(policy.models)
    name = args.model or (names[0] if len(names) == 1 else "")
    if name not in policy.models:
        raise DataError(str(args.policy), f"name a model with --model: one of {', '.join(names)}")
    model = policy.models[name]
    if not model.calibrator.path:
        raise DataError(str(args.policy), f"{name}'s calibrator is in the registry; give a file")
    predictor = OnnxPredictor(args.policy.parent / model.calibrator.path)
    data = _load(args)
    if predictor.class_count != data.classes:
        raise DataError(
            str(args.data), f"has {data.classes} classes; {name} has {predictor.class_count}"
        )
    target = args.target if args.target is not None else model.target_tier1_accuracy
    checks = check_thresholds(
        predictor.predict(data.logits),
        data.labels,
        model.thresholds,
        target,
        args.level,
        data.domains,
        data.weights,
    )
    missed = [c.segment for c in checks if c.missed]
    _print({"model": name, "data": str(args.data), **_weighted(data), "level": args.level,
            "segments": [asdict(c) for c in checks], "missed": missed}, args.out)  # fmt: skip
    for segment in missed:
        print(f"hitl: {segment}: Tier-1 accuracy is below its target {target}", file=sys.stderr)
    return 1 if missed else 0


def run_convert(args: argparse.Namespace) -> int:
    """A pickled (logits, labels) tuple, list or dict, checked, as an .npz."""
    import pickle

    import numpy as np

    from calibrators.data import check

    if not args.trust_pickle:
        raise DataError(
            str(args.pickle),
            "unpickling runs whatever code the file holds: pass --trust-pickle only for a"
            " file you trust",
        )
    try:
        with args.pickle.open("rb") as handle:
            loaded = pickle.load(handle)  # noqa: S301 (the caller trusts it, said so)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError) as exc:
        raise DataError(str(args.pickle), f"not a readable pickle: {exc}") from exc
    if isinstance(loaded, dict):
        pair = (loaded.get("logits"), loaded.get("labels"))
    elif isinstance(loaded, tuple | list) and len(loaded) == 2:
        pair = (loaded[0], loaded[1])
    else:
        raise DataError(str(args.pickle), "holds neither (logits, labels) nor a dict of them")
    data = check(str(args.pickle), pair[0], pair[1], None, probabilities=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, logits=data.logits, labels=data.labels)
    _print({"out": str(args.out), "rows": data.rows, "classes": data.classes})
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from calibrators.compare import compare_methods
    from calibrators.data import load_dataset
    from calibrators.methods import method

    data = _load(args)
    try:
        names = args.methods.split(",") if args.methods else None
        methods = None if names is None else [method(m, data.classes) for m in names]
    except ValueError as exc:
        raise DataError("--methods", str(exc)) from exc
    test = None if args.test is None else load_dataset(args.test)
    _unweighted("compare", data, test)
    if test is not None and test.classes != data.classes:
        raise DataError(str(args.test), f"has {test.classes} classes; --data has {data.classes}")
    comparison = compare_methods(
        data, methods, args.seed, args.target, args.level, progress=True, test=test
    )
    print(comparison.table(), file=sys.stderr)
    _print(asdict(comparison), args.out)
    return 0
