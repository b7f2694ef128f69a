"""The feature tests' small simulated world and configuration, for the decision path's tests."""

from tests.features.conftest import config, dataset  # noqa: F401 (fixtures)
