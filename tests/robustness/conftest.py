"""Fixtures shared with tests/sources: the local hub and its generated models (the pull-interrupt tests)."""

from tests.support.sources import hub, model_files, svc  # noqa: F401
