"""Fixtures of the runtime integration tests (shared with tests/support/runtime_fixtures.py)."""

from runtime_fixtures import make_models, models, models_dir, samples  # noqa: F401 - fixtures
