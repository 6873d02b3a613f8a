"""Moved to ``marsvision.curate.strategies``. Kept only for ``archive/service.py`` and benchmarks until
the web package lands (issue 21); delete it then (tests/test_layout.py lists it as pending)."""

from .strategies import *  # noqa: F403
from .strategies import DEFAULT_ROUND_SIZE, DEFAULT_STRATEGY, DEFAULT_WEIGHT, STRATEGIES  # noqa: F401
