import os

from hypothesis import HealthCheck, settings

# CI keeps the example counts bounded; run `HYPOTHESIS_PROFILE=long ./dev.sh test` for more.
settings.register_profile("default", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
