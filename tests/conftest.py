import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# CI keeps the example counts bounded; run `HYPOTHESIS_PROFILE=long ./dev.sh test` for more.
settings.register_profile("default", max_examples=25, deadline=None,
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
