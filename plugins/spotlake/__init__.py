"""spotlake: keep a data lake and a reporting database fresh on spot clusters."""

from __future__ import annotations

__version__ = "0.1.0"
