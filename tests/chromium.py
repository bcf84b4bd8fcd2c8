"""Debian's Chromium driven by Playwright, for the tests that look at pages as a
person does; such a test is skipped where Chromium is not installed (CI installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (Playwright's ``Browser``), closed on exit."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; CI does)")
    # Imported here so that collecting the tests that never open a page does not load it.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()
