"""The exceptions spotlake raises.

Bad user input raises a :class:`ValueError` subclass whose message names the
file or object at fault and the fix; everything else derives from
:class:`SpotlakeError`.
"""

from __future__ import annotations


class SpotlakeError(Exception):
    """Base class of every spotlake error."""


class ConfigError(SpotlakeError, ValueError):
    """A configuration file or value is invalid; the message names where and the fix."""


class StackError(SpotlakeError):
    """The local stack could not be started, checked or stopped."""
