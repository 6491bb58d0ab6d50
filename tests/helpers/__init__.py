"""Helpers shared by several test folders: test modules import these, never each other.

:mod:`tests.helpers.fleet` is also a pytest plugin (tests/conftest.py loads it): the fleet's
fixtures are defined once for the collector, dashboard and search tests."""
