"""docs/calling.md's Node.js example (docs/examples/route.mjs) against a real sidecar:
the page shows the file as it is, and the file, run by node with @grpc/grpc-js and
@grpc/proto-loader installed by npm, routes, escalates and reports refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.artefacts import confident_logits
from tests.integration.conftest import SidecarProcess
from tests.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "route.mjs"
PAGE = ROOT / "docs" / "calling.md"
PACKAGES = ("@grpc/grpc-js@1", "@grpc/proto-loader@0")
# npm's error codes for a registry it cannot reach (no network, no DNS, a proxy
# refusing): the environment's limit, not the example's fault.
OFFLINE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH")
NODE, NPM = shutil.which("node"), shutil.which("npm")


def test_the_page_shows_the_example_file_as_it_is() -> None:
    blocks = re.findall(r"^```js\n(.*?)^```$", PAGE.read_text(), re.MULTILINE | re.DOTALL)
    assert blocks == [EXAMPLE.read_text()], f"docs/calling.md's js block differs from {EXAMPLE}"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """route.mjs in a directory with the two npm packages installed beside it (node
    resolves an ES module's imports from the script's own directory)."""
    if NODE is None or NPM is None:
        pytest.skip("the Node.js example needs node and npm on PATH")
    workdir = tmp_path_factory.mktemp("node-example")
    try:
        install = subprocess.run(
            [NPM, "install", "--no-audit", "--no-fund", *PACKAGES],
            check=False,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm install took over 300 s: npm's registry is out of reach")
    if install.returncode != 0:
        if offline := OFFLINE.search(install.stderr):
            pytest.skip(f"npm cannot reach its registry ({offline.group()})")
        raise AssertionError(f"npm install failed: {install.stderr}")
    shutil.copy(EXAMPLE, workdir / EXAMPLE.name)
    return workdir / EXAMPLE.name


def run_example(example: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert NODE is not None  # the example fixture skips without it
    return subprocess.run(
        [NODE, str(example), target, *args],
        check=False,
        cwd=example.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HITL_PROTO_DIR": str(ROOT / "proto")},
    )


def decision_of(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert run.returncode == 0, run.stderr
    decision: dict[str, Any] = json.loads(run.stdout)
    return decision


def logits_arg(logits: list[float]) -> str:
    return ",".join(str(value) for value in logits)


def test_a_confident_prediction_is_automated(example: Path, sidecar: SidecarProcess) -> None:
    decision = decision_of(run_example(example, sidecar.address, "n-1", "m", "8,0,0"))
    assert decision["request_id"] == "n-1"
    assert decision["tier"] == "TIER_AUTOMATED"
    assert decision["reason"] == "REASON_THRESHOLD"
    assert (decision["predicted_class"], decision["predicted_label"]) == (0, "cat")
    assert 0.9 <= decision["calibrated_confidence"] <= 1.0  # the policy's t_high is 0.9
    assert decision["escalation_id"] == ""
    assert decision["policy_revision"] == 1
    assert not decision["degraded"]
    assert sidecar.escalations() == []


def test_an_uncertain_prediction_is_escalated_with_its_request(
    example: Path, sidecar: SidecarProcess
) -> None:
    decision = decision_of(run_example(example, sidecar.address, "n-2", "m", "0,0,0"))
    assert decision["tier"] == "TIER_HUMAN_PRIMARY"  # 1/3 is below the policy's t_low 0.5
    assert decision["calibrated_confidence"] == pytest.approx(1 / 3, abs=1e-6)
    assert decision["escalation_id"].startswith("esc-")
    [escalation] = sidecar.escalations()
    assert escalation["escalation_id"] == decision["escalation_id"]
    assert escalation["request_id"] == "n-2"
    assert escalation["input_ref"] == "s3://inputs/n-2.json"
    assert escalation["context"] == {"customer": "c-19"}


def test_a_replay_gets_the_original_decision(example: Path, sidecar: SidecarProcess) -> None:
    logits = logits_arg(confident_logits(1, strength=0.5))
    first = decision_of(run_example(example, sidecar.address, "n-3", "m", logits))
    again = decision_of(run_example(example, sidecar.address, "n-3", "m", logits))
    assert first["escalation_id"] != ""
    assert again == first
    assert len(sidecar.escalations()) == 1


def test_a_refusal_names_the_status_and_the_field(example: Path, sidecar: SidecarProcess) -> None:
    run = run_example(example, sidecar.address, "n-4", "m", "1,2")
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.strip() == "INVALID_ARGUMENT: logits: 2 values; model 'm' has 3 classes"


def test_no_sidecar_is_unavailable_after_the_retries(example: Path) -> None:
    run = run_example(example, f"127.0.0.1:{free_port()}", "n-5", "m", "8,0,0")
    assert run.returncode == 1
    assert run.stderr.startswith("UNAVAILABLE: ")
