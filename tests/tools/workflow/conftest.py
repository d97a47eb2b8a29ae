"""Fixtures shared with the test-runner tests: a socket the project's tests signal on."""

from tests.tools.test_runner.conftest import signals

__all__ = ["signals"]
