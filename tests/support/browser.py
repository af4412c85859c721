"""Where the browser tests keep their screenshots: each test's folder, printed at the end of the run."""

from __future__ import annotations

import pytest

SCREENSHOTS = pytest.StashKey[list[str]]()
