import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# CI keeps the example counts bounded; run `HYPOTHESIS_PROFILE=long ./dev.sh test` for more.
# The "ci" profile (set by .ci/run) draws the same examples on every run: CI cannot flake on a
# rare draw; the default and long profiles keep exploring new ones.
settings.register_profile("default", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def dot_program():
    """Skip unless Graphviz's `dot` is installed (CI sets REQUIRE_DOT=1: then it must be)."""
    if shutil.which("dot") is None:
        if os.environ.get("REQUIRE_DOT"):
            pytest.fail("REQUIRE_DOT is set but the Graphviz 'dot' program is not on PATH")
        pytest.skip("Graphviz 'dot' is not installed")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium driven by Playwright (the system browser: Playwright's own
    download is not needed). Skips unless both are installed; CI sets REQUIRE_BROWSER=1,
    and then they must be."""
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        missing = "chromium" if exe is None else "the playwright package"
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER is set but {missing} is not installed")
        pytest.skip(f"{missing} is not installed")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield chromium
        chromium.close()
