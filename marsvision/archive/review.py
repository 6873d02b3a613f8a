"""Moved to ``marsvision.curate.queue``. Kept only for ``archive/service.py`` and benchmarks/refit.py
until the web package lands (issue 21); delete it then (tests/test_layout.py lists it as pending)."""

from ..curate.queue import POOL, review_queue  # noqa: F401
