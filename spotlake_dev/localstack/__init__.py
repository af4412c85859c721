"""The local stack: real services on one machine, bound to 127.0.0.1."""

from __future__ import annotations
