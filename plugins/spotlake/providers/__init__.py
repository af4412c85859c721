"""Cluster providers: where a pool's clusters come from (EMR in production, Livy processes locally)."""

from __future__ import annotations
