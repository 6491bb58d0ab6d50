"""The collector tests run with the fleet's fixtures (tests/helpers/fleet.py, a plugin of the
whole suite), each in its own results, cache and token directories."""

import pytest


@pytest.fixture(autouse=True)
def _fleet_home(fleet_home):
    """Every collector test keeps its records in its tmp dir."""
