"""The soak runs take minutes each: out of the default suite (and so of CI) unless QUANTLAKE_SOAK=1.

`make soak` sets it. The fast tests here (the default instance, the fresh-deployment fixes) always run.
"""

from __future__ import annotations

import os

import pytest

LONG = "tests/soak/test_soak.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("QUANTLAKE_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="a soak (minutes): QUANTLAKE_SOAK=1 or `make soak` runs it")
    for item in items:
        if str(item.path).replace(os.sep, "/").endswith(LONG):
            item.add_marker(skip)
