"""User-written transformations, registered by name for the ``function`` transform step.

A function takes a DataFrame and returns a DataFrame, nothing else: no I/O, no
clock, no session state. Register it in a module of this package (the module
name is the first part of its name by convention)::

    # spark_jobs/user_transforms/shop.py
    @register("shop.normalise_email", columns=["email"])
    def normalise_email(df: DataFrame) -> DataFrame: ...

and name it in ``config/pipelines.yaml`` as ``- function: shop.normalise_email``.
``columns`` lists the columns the function needs; the extraction checks them
before calling it, so a missing column gives a message naming the step.
Every module of this package is imported when the package is, so
:func:`names` lists all functions (the Airflow side validates the config with it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame

from spark_jobs.common.errors import UnknownUserTransformError

UserTransform = Callable[[DataFrame], DataFrame]


@dataclass(frozen=True)
class Registered:
    name: str
    function: UserTransform
    columns: tuple[str, ...]


_REGISTRY: dict[str, Registered] = {}


def register(name: str, columns: Sequence[str] = ()) -> Callable[[UserTransform], UserTransform]:
    """Register ``fn`` as the user transform ``name``; ``columns`` are the input columns it needs."""

    def decorate(fn: UserTransform) -> UserTransform:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.function is not fn:
            raise ValueError(
                f"user transform '{name}' is registered twice ({existing.function.__module__}."
                f"{existing.function.__qualname__} and {fn.__module__}.{fn.__qualname__}); rename one"
            )
        _REGISTRY[name] = Registered(name=name, function=fn, columns=tuple(columns))
        return fn

    return decorate


def lookup(name: str) -> Registered:
    """The registration of ``name``: the function and the columns it needs."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownUserTransformError(
            f"no user transform is registered as '{name}'; registered: {', '.join(names()) or 'none'} — "
            "add it with @register('<name>') in a module of spark_jobs/user_transforms/"
        ) from None


def get(name: str) -> UserTransform:
    """The function registered as ``name``."""
    return lookup(name).function


def names() -> list[str]:
    return sorted(_REGISTRY)


def _import_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_modules()
