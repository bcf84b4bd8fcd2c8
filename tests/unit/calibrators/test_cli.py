"""``hitl calibrate``: the whole workflow from a file of labelled outputs to a policy
the sidecar loads, and a clear message with exit code 2 for every bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from calibrators.metrics import softmax
from hitl.cli import main
from sidecar.policy.loader import build_snapshot, parse_policy_bytes
from tests.calibration_data import synthetic


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["calibrate", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code in (0, 3) else None), err


@pytest.fixture
def held_out(tmp_path: Path) -> Path:
    """6,000 rows over three domains; the 'small' one is too small to bound alone."""
    data = synthetic(2.0, rows=6000, classes=4, seed=5, spread=8.0)
    domains = np.array(["retail"] * 3000 + ["corporate"] * 2900 + ["small"] * 100)
    path = tmp_path / "held_out.npz"
    np.savez(path, logits=data.logits, labels=data.labels, domains=domains)
    return path


def test_fit_export_thresholds_make_a_policy_the_sidecar_loads(
    held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fit (auto) -> export -> evaluate -> thresholds on other held-out rows (never
    the rows the calibrator was fitted on) -> a policy that loads."""
    code, fit, _ = run(capsys, "fit", "--data", str(held_out), "--out", str(tmp_path / "fit.json"))
    assert code == 0
    assert fit["method"] == fit["selection"]["chosen"]
    assert fit["ece_after"] < fit["ece_before"]

    onnx_path = tmp_path / "cal" / "model.onnx"
    code, artefact, _ = run(
        capsys,
        "export",
        "--fit",
        str(tmp_path / "fit.json"),
        "--out",
        str(onnx_path),
        "--version",
        "v7",
        "--class-labels",
        "a,b,c,d",
    )
    assert code == 0
    assert artefact["version"] == "v7"

    code, report, _ = run(
        capsys,
        "evaluate",
        "--data",
        str(held_out),
        "--calibrator",
        str(onnx_path),
        "--plots",
        str(tmp_path / "plots"),
        "--out",
        str(tmp_path / "eval.json"),
    )
    assert code == 0
    assert report["calibrated"]["ece"] < report["raw"]["ece"]
    assert set(report["calibrated_by_domain"]) == {"retail", "corporate", "small"}
    assert all(Path(p).stat().st_size > 10_000 for p in report["plots"])
    assert json.loads((tmp_path / "eval.json").read_text()) == report

    refused = main(
        ["calibrate", "thresholds", "--data", str(held_out), "--calibrator", str(onnx_path)]
    )
    assert refused == 2
    assert "is the data the calibrator was fitted on" in capsys.readouterr().err

    other = synthetic(2.0, rows=6000, classes=4, seed=6, spread=8.0)
    test_split = tmp_path / "test_split.npz"
    np.savez(
        test_split, logits=other.logits, labels=other.labels, domains=np.load(held_out)["domains"]
    )
    fragment_path = tmp_path / "fragment.yaml"
    code, thresholds, err = run(
        capsys,
        "thresholds",
        "--data",
        str(test_split),
        "--calibrator",
        str(onnx_path),
        "--target",
        "0.95",
        "--low-target",
        "0.7",
        "--model",
        "fraud",
        "--out",
        str(fragment_path),
    )
    assert code == 0
    assert "domain 'small'" in err
    assert "model default applies" in err
    entry = yaml.safe_load(fragment_path.read_text())["models"]["fraud"]
    assert set(entry["domains"]) == {"retail", "corporate"}
    assert entry["thresholds"]["t_low"] <= entry["thresholds"]["t_high"]
    default = thresholds["report"]["default"]
    assert default["tier1_lower_bound"] >= 0.95
    assert default["reviews_per_million"] == pytest.approx((1 - default["automated_share"]) * 1e6)

    entry["calibrator"] = {"path": "cal/model.onnx", "sha256": artefact["sha256"], "version": "v7"}
    policy_doc = {"revision": 1, "models": {"fraud": entry}}
    policy = parse_policy_bytes(yaml.safe_dump(policy_doc).encode(), "policy.yaml")
    snapshot = build_snapshot(policy, tmp_path, "policy.yaml")
    assert snapshot.calibrators["fraud"].metadata.labels == ("a", "b", "c", "d")
    assert snapshot.policy.models["fraud"].labels == ("a", "b", "c", "d")

    # check: what the policy's thresholds do on labelled rows, against the target.
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy_doc))
    check = ["check", "--policy", str(tmp_path / "policy.yaml"), "--data", str(test_split)]
    code, checked, _ = run(capsys, *check, "--target", "0.95")
    assert code == 0
    segments = {s["segment"]: s for s in checked["segments"]}
    assert set(segments) == {"all", "retail", "corporate", "small"}
    every = segments["all"]
    assert every["tier1_interval"][0] <= every["tier1_accuracy"] <= every["tier1_interval"][1]
    assert every["automated_share"] + every["assisted_share"] + every["primary_share"] == (
        pytest.approx(1.0)
    )
    assert checked["missed"] == []
    code = main(["calibrate", *check, "--target", "0.9999"])
    assert code == 1
    assert "Tier-1 accuracy is below its target 0.9999" in capsys.readouterr().err


def test_fit_bounds_thresholds_on_cross_fitted_confidences(
    held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fit --thresholds: each row calibrated by a fit on the other folds, the bound on
    those confidences, the fragment written; the calibrator itself is fitted on all."""
    fragment = tmp_path / "fragment.yaml"
    code, fit, _ = run(
        capsys, "fit", "--data", str(held_out), "--method", "isotonic",
        "--out", str(tmp_path / "fit.json"), "--thresholds", str(fragment),
        "--target", "0.95", "--model", "fraud",
    )  # fmt: skip
    assert code == 0
    assert fit["rows"] == 6000
    default = fit["thresholds"]["report"]["default"]
    assert default["tier1_lower_bound"] >= 0.95
    entry = yaml.safe_load(fragment.read_text())["models"]["fraud"]
    assert entry["thresholds"]["t_high"] == pytest.approx(default["t_high"])


def test_fit_with_onnx_in_one_step(
    held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fit --method NAME --onnx PATH writes the fit and the artefact together."""
    code, fit, _ = run(
        capsys,
        "fit",
        "--data",
        str(held_out),
        "--method",
        "isotonic",
        "--out",
        str(tmp_path / "f.json"),
        "--onnx",
        str(tmp_path / "f.onnx"),
    )
    assert code == 0
    assert fit["method"] == "isotonic"
    assert "selection" not in fit
    assert fit["artefact"]["version"].startswith("isotonic-")
    assert (tmp_path / "f.onnx").stat().st_size > 0


def test_compare_reports_every_method(held_out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """compare fits every method on one half and reports the held-out half."""
    code, report, err = run(capsys, "compare", "--data", str(held_out), "--target", "0.95")
    assert code == 0
    assert [r["method"] for r in report["results"]] == [
        "temperature",
        "vector",
        "isotonic",
        "isotonic-ovr",
        "histogram",
    ]
    assert "| temperature" in err
    assert report["fit_rows"] == report["held_out_rows"] == 3000


def test_compare_judges_on_a_test_file(
    held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare --test: every method fitted on all of --data, judged on the test file."""
    other = synthetic(2.0, rows=2000, classes=4, seed=11, spread=8.0)
    test_file = _npz(tmp_path, logits=other.logits, labels=other.labels)
    argv = ["compare", "--data", str(held_out), "--test", str(test_file), "--target", "0.95"]
    code, report, _ = run(capsys, *argv, "--methods", "temperature")
    assert code == 0
    assert (report["fit_rows"], report["held_out_rows"]) == (6000, 2000)


@pytest.mark.parametrize("suffix", ["csv", "jsonl", "npy"])
def test_other_formats_give_the_same_fit(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV, JSONL and .npy pairs (probabilities here) fit the same temperature as .npz logits."""
    data = synthetic(2.0, rows=600, classes=3, seed=9)
    probs = softmax(data.logits)
    npz = tmp_path / "d.npz"
    np.savez(npz, logits=np.log(probs), labels=data.labels)
    path = tmp_path / f"d.{suffix}"
    extra: list[str] = []
    if suffix == "csv":
        header = "label,domain," + ",".join(f"prob_{k}" for k in range(3))
        lines = [
            f"{y},d,{','.join(repr(float(v)) for v in p)}"
            for p, y in zip(probs, data.labels, strict=True)
        ]
        path.write_text("\n".join([header, *lines]) + "\n")
    elif suffix == "jsonl":
        path.write_text(
            "".join(
                json.dumps({"probabilities": p.tolist(), "label": int(y)}) + "\n"
                for p, y in zip(probs, data.labels, strict=True)
            )
        )
    else:
        np.save(path, probs)
        np.save(tmp_path / "labels.npy", data.labels)
        extra = ["--labels", str(tmp_path / "labels.npy")]
    temperatures = []
    for source in (npz, path):
        code, fit, _ = run(
            capsys,
            "fit",
            "--data",
            str(source),
            *extra,
            "--method",
            "temperature",
            "--out",
            str(tmp_path / "fit.json"),
        )
        assert code == 0
        temperatures.append(fit["parameters"]["temperature"])
    assert temperatures[0] == pytest.approx(temperatures[1], rel=1e-6)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _npz(tmp_path: Path, **arrays: Any) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda t: _npz(t, logits=np.zeros((5, 3)), labels=np.zeros(4, int)),
            "5 rows of scores but labels of shape (4,)",
        ),
        (
            lambda t: _npz(t, logits=np.zeros((5, 3)), labels=np.array([0, 1, 2, 3, 0])),
            "labels outside 0..2 (first: row 3, label 3)",
        ),
        (
            lambda t: _npz(t, logits=np.array([[0.0, np.nan]] * 4), labels=np.zeros(4, int)),
            "4 rows hold NaN or infinity",
        ),
        (lambda t: _npz(t, logits=np.zeros((0, 3)), labels=np.zeros(0, int)), "no rows"),
        (
            lambda t: _npz(t, logits=np.zeros((5, 3)), labels=np.full(5, 0.5)),
            "labels must be integers",
        ),
        (
            lambda t: _npz(t, predictions=np.full((5, 3), 0.5), labels=np.zeros(5, int)),
            "do not sum to 1",
        ),
        (lambda t: _npz(t, scores=np.zeros((5, 3))), "holds none of logits"),
        (lambda t: _file(t, "empty.csv", ""), "header needs 'label'"),
        (lambda t: _file(t, "e.jsonl", ""), "no rows"),
        (
            lambda t: _file(t, "x.jsonl", '{"logits": [1, 2], "label": 0}\n{oops\n'),
            "x.jsonl:2: not JSON",
        ),
        (
            lambda t: _file(t, "x.csv", "label,logit_0,logit_1\n0,1,zz\n"),
            "x.csv:2: a logit value is not a number",
        ),
        (
            lambda t: _file(
                t,
                "w.jsonl",
                '{"logits": [1, 2], "label": 0, "weight": 2}\n{"logits": [1, 2], "label": 1}\n',
            ),
            "w.jsonl:2: has no 'weight', unlike the rows before it",
        ),
        (
            lambda t: _file(t, "w.csv", "label,weight,logit_0,logit_1\n0,heavy,1,2\n"),
            "w.csv:2: weight 'heavy' is not a number",
        ),
        (
            lambda t: _npz(
                t,
                logits=np.zeros((3, 2)),
                labels=np.zeros(3, int),
                weights=np.array([1.0, 0.0, 2.0]),
            ),
            "1 weights are not positive finite numbers (first: row 1, weight 0.0)",
        ),
        (lambda t: t / "missing.npz", "no such file"),
        (lambda t: _file(t, "x.parquet", ""), "unknown format"),
    ],
)
def test_bad_input_is_named_and_exits_2(
    make: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each unusable file gets a message naming the problem and exit code 2."""
    path = make(tmp_path)
    code, _, err = run(capsys, "fit", "--data", str(path), "--out", str(tmp_path / "f.json"))
    assert code == 2
    assert message in err


def test_no_defensible_threshold_exits_3_with_what_would_help(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for a 0.999 bound from 500 rows exits 3 (not 2, a bad input) with JSON:
    the best bound any threshold reached, and how many rows a threshold needs."""
    data = synthetic(1.0, rows=500, classes=3)
    path = _npz(tmp_path, logits=data.logits, labels=data.labels)
    run(
        capsys,
        "fit",
        "--data",
        str(path),
        "--method",
        "temperature",
        "--out",
        str(tmp_path / "f.json"),
    )
    other = synthetic(1.0, rows=500, classes=3, seed=9)
    test_split = tmp_path / "test.npz"
    np.savez(test_split, logits=other.logits, labels=other.labels)
    code, answer, err = run(
        capsys,
        "thresholds",
        "--data",
        str(test_split),
        "--calibrator",
        str(tmp_path / "f.json"),
        "--target",
        "0.999",
    )
    assert code == 3
    assert "500 rows; bounding accuracy at 0.999 with 95% confidence needs at least 5990" in err
    assert answer["error"] == "no_threshold"
    assert answer["rows"] == 500
    assert 0.9 < answer["best_bound"] < 0.999
    assert "at least 5990" in answer["hint"]


def test_calibrator_of_the_wrong_width_and_wrong_method_exit_2(
    held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 4-class calibrator on 3-class data, and Platt on 4 classes, are refused."""
    code, _, err = run(
        capsys,
        "fit",
        "--data",
        str(held_out),
        "--method",
        "platt",
        "--out",
        str(tmp_path / "f.json"),
    )
    assert code == 2
    assert "platt needs two classes, the data has 4" in err
    run(
        capsys,
        "fit",
        "--data",
        str(held_out),
        "--method",
        "temperature",
        "--out",
        str(tmp_path / "f.json"),
    )
    data = synthetic(1.0, rows=50, classes=3)
    small = _npz(tmp_path, logits=data.logits, labels=data.labels)
    code, _, err = run(
        capsys, "evaluate", "--data", str(small), "--calibrator", str(tmp_path / "f.json")
    )
    assert code == 2
    assert "calibrates 4 classes; the data has 3" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["thresholds", "--level", "95"], "'95' must be in [0.5, 1), e.g. 0.95"),
        (["thresholds", "--level", "1"], "'1' must be in [0.5, 1)"),
        (["thresholds", "--level", "0"], "'0' must be in [0.5, 1)"),
        (["thresholds", "--target", "1.5"], "'1.5' must lie strictly between 0 and 1"),
        (["fit", "--folds", "1"], "'1': cross-validation needs at least 2 folds"),
        (["fit", "--method", "magic"], "invalid choice: 'magic'"),
    ],
)
def test_bad_options_exit_2_naming_them_before_any_data_is_read(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option out of range is a usage error (exit 2) naming it, checked before the
    data file is even opened (here it does not exist)."""
    rest = ["--data", "missing.npz", "--calibrator", "c.json", "--out", "o.json"]
    if argv[0] == "fit":
        rest.remove("--calibrator")
        rest.remove("c.json")
    with pytest.raises(SystemExit) as exited:
        main(["calibrate", *argv, *rest])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "not a readable .npz"),  # a 0-byte file
        (
            {"logits": [[0.7, 0.3], [0.2, 0.8]], "labels": [0, 1]},
            "'logits' holds probabilities",
        ),
        (
            {
                "logits": [[1.0, -1.0], [0.5, 2.0]],
                "probabilities": [[0.7, 0.3], [0.2, 0.8]],
                "labels": [0, 1],
            },
            "holds both logits and probabilities",
        ),
    ],
)
def test_unusable_npz_files_are_named(
    tmp_path: Path, arrays: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0-byte file, probabilities stored under 'logits' (which would be softmaxed a
    second time), or both keys at once: exit 2 with the file and the reason."""
    if arrays:
        path = _npz(tmp_path, **{k: np.asarray(v) for k, v in arrays.items()})
    else:
        path = tmp_path / "bad.npz"
        path.write_bytes(b"")
    code = main(["calibrate", "evaluate", "--data", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err
    assert message in err


def test_labels_as_a_column_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels saved as shape (N, 1), as many tools do, are the same labels."""
    data = synthetic(1.0, rows=200, classes=3)
    path = _npz(tmp_path, logits=data.logits, labels=data.labels.reshape(-1, 1))
    code, report, _ = run(capsys, "evaluate", "--data", str(path))
    assert code == 0
    assert report["rows"] == 200


def test_the_method_choices_are_the_methods() -> None:
    """--method's choices (named in the command, so --help needs no scipy) are exactly
    the methods fit knows."""
    from calibrators.cli import METHOD_NAMES
    from calibrators.methods import METHODS

    assert set(METHOD_NAMES) == set(METHODS)


def test_thresholds_for_production_class_mix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --production (unlabelled outputs), the bound is for production's class
    mix, estimated and reported; without it, a warning says what it assumes; a
    production file of the wrong width is refused naming it."""
    from tests.unit.calibrators.test_shift import LABELLED, PRODUCTION, sample

    rng = np.random.default_rng(3)
    labelled, labels = sample(20_000, LABELLED, rng)
    unlabelled, _ = sample(20_000, PRODUCTION, rng)
    data = _npz(tmp_path, probabilities=labelled, labels=labels)
    production = tmp_path / "production.npz"
    np.savez(production, probabilities=unlabelled)
    common = [
        "fit", "--data", str(data), "--method", "temperature",
        "--out", str(tmp_path / "f.json"), "--thresholds", str(tmp_path / "t.yaml"),
        "--target", "0.9", "--low-target", "0.8",
    ]  # fmt: skip
    code, plain, err = run(capsys, *common)
    assert code == 0
    assert "assumes production's class mix is the labelled rows'" in err
    assert plain["thresholds"]["label_shift"] == {
        "assumed": "production's class mix is the labelled rows'"
    }
    code, shifted, _ = run(capsys, *common, "--production", str(production))
    assert code == 0
    shift = shifted["thresholds"]["label_shift"]
    assert np.allclose(shift["production_priors"], PRODUCTION, atol=0.03)
    assert shift["total_variation"] > 0.3
    # Production's rare-in-the-labels classes are the hard ones here: a stricter t_high.
    t_plain = plain["thresholds"]["report"]["default"]["t_high"]
    assert shifted["thresholds"]["report"]["default"]["t_high"] > t_plain
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, logits=np.zeros((10, 2)))
    code, _, err = run(capsys, *common, "--production", str(narrow))
    assert code == 2
    assert f"{narrow}: scores must be [rows, 3]" in err


def test_raw_confidence_thresholds_and_bins(
    held_out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """thresholds without --calibrator bounds the raw softmax confidence (a baseline);
    evaluate --bins sets the ECE's bins."""
    code, raw, _ = run(capsys, "thresholds", "--data", str(held_out), "--target", "0.9")
    assert code == 0
    assert raw["report"]["default"]["tier1_lower_bound"] >= 0.9
    _, coarse, _ = run(capsys, "evaluate", "--data", str(held_out), "--bins", "5")
    _, fine, _ = run(capsys, "evaluate", "--data", str(held_out), "--bins", "50")
    assert (coarse["bins"], fine["bins"]) == (5, 50)
    assert coarse["raw"]["ece"] != fine["raw"]["ece"]


def test_convert_a_pickle_only_when_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pickled (logits, labels) tuple becomes an .npz, with --trust-pickle only."""
    import pickle

    data = synthetic(1.0, rows=100, classes=3)
    source = tmp_path / "outputs.pkl"
    source.write_bytes(pickle.dumps((data.logits, data.labels.reshape(-1, 1))))
    out = tmp_path / "outputs.npz"
    code = main(["calibrate", "convert", str(source), "--out", str(out)])
    assert code == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not out.exists()
    code, report, _ = run(capsys, "convert", str(source), "--out", str(out), "--trust-pickle")
    assert (code, report["rows"], report["classes"]) == (0, 100, 3)
    code, evaluated, _ = run(capsys, "evaluate", "--data", str(out))
    assert (code, evaluated["rows"]) == (0, 100)


def test_an_output_that_cannot_be_written_is_named_not_a_traceback(
    held_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    out = blocked / "fit.json"
    code, _, err = run(capsys, "fit", "--data", str(held_out), "--method", "temperature",
                       "--out", str(out))  # fmt: skip
    assert code == 2
    assert err.strip().startswith(f"hitl: {blocked}")
    assert "Traceback" not in err
