"""Options of the whole test run.

`--long` also runs the long variants of the reliability tests (stress, crash and fuzzing,
marker `long`): a minute or more each. Without it they are deselected, so that the
default run (and CI) stays short; their short variants always run.

    .venv/bin/python -m pytest --long -m long tests/integration    # only the long ones
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long variants of the reliability tests "
                          "(marker `long`: stress, crash, fuzzing)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    long_ones = [item for item in items if item.get_closest_marker("long") is not None]
    if long_ones:
        config.hook.pytest_deselected(items=long_ones)
        items[:] = [item for item in items if item.get_closest_marker("long") is None]
