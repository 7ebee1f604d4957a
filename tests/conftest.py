"""Hypothesis settings profiles, chosen with HYPOTHESIS_PROFILE (default "dev").

* ``dev``: quick enough to run on every change (tests/test_state_machine.py in about 30-40 s).
* ``ci``: more and longer runs; .ci/run selects it (tests/test_state_machine.py in about 100 s
  on one core, and CI runs the suite twice: release and debug builds).

``stateful_step_count`` is the number of operations per state-machine run. A test may still
narrow these with its own ``@settings`` (test_state_machine.py scales ``max_examples`` down for
its costliest configurations, whose block splits make thousands of leaves).
"""

import os

from hypothesis import HealthCheck, settings

# Differential state machines compare whole table states after every step: a single example can
# take a while, which is expected and not a problem with the strategies.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "dev",
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=_SLOW_OK,
    database=None,
    print_blob=True,
)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
