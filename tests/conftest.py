from __future__ import annotations

import logging
import os

import pytest

# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after
# pytest has closed its capture streams; keep it quiet so the run ends on pytest's summary.
logging.getLogger("py4j").setLevel(logging.WARNING)

# Unit tests never reach real AWS: fixed fake credentials, one region.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        elif f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)
