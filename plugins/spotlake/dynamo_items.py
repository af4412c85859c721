"""The registry's DynamoDB items: dataclasses to attribute values and back, with boto3's
:class:`~boto3.dynamodb.types.TypeSerializer` and :class:`~boto3.dynamodb.types.TypeDeserializer`.

The registry (:mod:`spotlake.registry`) talks to DynamoDB through a low-level client, which takes
and gives attribute values (``{"S": "READY"}``, ``{"N": "3"}``). An item holds every field of its
dataclass that is not None, under the field's name: a string (an enum member as its value) as
``S``, an integer as ``N``, a boolean as ``BOOL``, a dict as ``M``, a list as ``L``.

Numbers: boto3 refuses floats (they are inexact) and reads every number as a ``Decimal``. A float
is written as the ``Decimal`` of its shortest repr (``0.1`` as ``N "0.1"``); a number read back
is an ``int`` when it is integral and a ``float`` otherwise, which is what the dataclasses' fields
hold. (DynamoDB stores numbers canonically, so ``2.0`` comes back as the integer 2.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Protocol, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer


class _Dataclass(Protocol):
    """A dataclass instance: what :func:`dataclasses.fields` takes."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


T = TypeVar("T", bound=_Dataclass)
AttributeValue = dict[str, Any]

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def attribute_value(value: Any) -> AttributeValue:
    """``value`` as a DynamoDB attribute value: ``"x"`` -> ``{"S": "x"}``, ``3`` -> ``{"N": "3"}``."""
    serialized: AttributeValue = _SERIALIZER.serialize(_storable(value))
    return serialized


def python_value(value: AttributeValue) -> Any:
    """The Python value of an attribute value (numbers as int or float, never Decimal)."""
    return _native(_DESERIALIZER.deserialize(value))


def attribute_values(values: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Each of ``values`` as an attribute value: an item's attributes, a key, or an expression's
    ``ExpressionAttributeValues`` (``{":v": 3}`` -> ``{":v": {"N": "3"}}``)."""
    return {name: attribute_value(value) for name, value in values.items()}


def to_item(obj: Any) -> dict[str, AttributeValue]:
    """The item of a dataclass instance: each field that is not None."""
    return attribute_values({f.name: value for f in fields(obj) if (value := getattr(obj, f.name)) is not None})


def item_values(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """An item's attributes as Python values."""
    return {name: python_value(value) for name, value in item.items()}


def from_item(cls: type[T], item: Mapping[str, AttributeValue]) -> T:
    """The dataclass ``cls`` of an item; attributes that are not fields of ``cls`` are ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{name: python_value(value) for name, value in item.items() if name in names})


def _storable(value: Any) -> Any:
    """``value`` in the types TypeSerializer takes: an enum member as its value, a str subclass as
    a str, a float as a Decimal, containers element by element."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return int(value)
    if isinstance(value, Mapping):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def _native(value: Any) -> Any:
    """A deserialised value with its Decimals as int (integral) or float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _native(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_native(item) for item in value]
    if isinstance(value, set | frozenset):
        return {_native(item) for item in value}
    return value
