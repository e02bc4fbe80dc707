from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Profiles chosen by HYPOTHESIS_PROFILE. "ci" is derandomized: the same examples every run,
# and a failure prints the blob that reproduces it.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True, max_examples=30)
settings.register_profile(
    "thorough",
    deadline=None,
    print_blob=True,
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
