"""The thin client distribution (client/): built as a wheel, installed alone in a new
virtual environment, it brings only gRPC and protobuf, and routes against a running
sidecar without importing the sidecar or its runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import SidecarProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What pip may install for it (grpcio's own dependency included).
ALLOWED = {"hitl-client", "grpcio", "grpcio-health-checking", "protobuf", "typing-extensions"}
TOOLS = {"pip", "setuptools", "wheel"}

ROUTE = textwrap.dedent(
    """
    import json, sys
    from hitl_client import TIER_AUTOMATED, TIER_HUMAN_PRIMARY, RouterClient, route_request

    with RouterClient(sys.argv[1]) as client:
        sure = client.route(route_request("thin-1", "m", [8.0, 0.0, 0.0]))
        unsure = client.route(route_request("thin-2", "m", [0.3, 0.0, 0.0]))
    heavy = {"sidecar", "numpy", "onnxruntime", "cryptography", "nats", "opentelemetry"}
    print(json.dumps({
        "sure": sure.tier == TIER_AUTOMATED,
        "unsure": unsure.tier == TIER_HUMAN_PRIMARY,
        "imported": sorted(heavy & {name.split(".")[0] for name in sys.modules}),
    }))
    """
)


def test_the_client_installs_alone_and_routes(tmp_path: Path, sidecar: SidecarProcess) -> None:
    source = shutil.copytree(ROOT / "client", tmp_path / "client")  # setuptools builds in it
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    (wheel,) = wheels.glob("hitl_client-*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
    )
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed)}
    assert installed - TOOLS <= ALLOWED, installed
    answer = subprocess.run(
        [python, "-c", ROUTE, sidecar.address],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert json.loads(answer) == {"sure": True, "unsure": True, "imported": []}
