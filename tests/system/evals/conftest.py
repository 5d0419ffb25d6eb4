"""The evals marker: scores of the whole local decision that fail the build when they regress."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "evals: scores the local decision against figures committed in tests/system/evals"
    )
