"""Shared fixtures live in tests/fixtures/*, one module per concern."""

pytest_plugins = [
    "tests.fixtures.audio",
    "tests.fixtures.bad_input",
    "tests.fixtures.broker",
    "tests.fixtures.models",
    "tests.fixtures.prometheus",
    "tests.fixtures.services",
]
