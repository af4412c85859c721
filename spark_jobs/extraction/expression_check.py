"""``derive`` and ``filter`` expressions, checked on the tree Spark's own parser makes of them.

Text matching cannot tell what Spark will call: a quoted name (```reflect```), a comment
between the name and its parenthesis, a line break or another case all reach the same
function. So the expression is parsed with Spark's SQL parser (``CatalystSqlParser``, no
session needed, just the JVM) and every function call in the tree is looked up: reflection
(``reflect``, ``java_method``, ``try_reflect``) is refused, and so is any function that is not
one of Spark's built-ins (a session UDF, a catalog function, a qualified name); a subquery is
refused too (a transform sees one row). The same check runs in the Airflow task before a job is
submitted and in the job before anything is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

EXCEPTION_NAME = re.compile(r"^[\w.$]+(Exception|Error):")
REFLECTION = frozenset({"reflect", "java_method", "try_reflect"})
FUNCTION_NODE = "org.apache.spark.sql.catalyst.analysis.UnresolvedFunction"
SUBQUERY_NODES = ("ScalarSubquery", "Exists", "ListQuery", "LateralSubquery", "InSubquery", "UnresolvedOuterReference")


class ExpressionRefused(ValueError):
    """The expression does not parse, or calls something a transform may not call."""


def builtin_functions(jvm: Any) -> frozenset[str]:
    """The names of Spark's built-in functions, as its function registry lists them."""
    registry = jvm.org.apache.spark.sql.catalyst.analysis.FunctionRegistry.builtin()
    names = registry.listFunction()
    return frozenset(str(names.apply(i).funcName()).lower() for i in range(names.size()))


def _children(node: Any) -> Iterator[Any]:
    children = node.children()
    for i in range(children.size()):
        yield children.apply(i)


def called_functions(jvm: Any, expression: str) -> list[str]:
    """The functions ``expression`` calls (lower case, qualified names joined with dots), from the
    tree Spark's parser makes of it; raises :class:`ExpressionRefused` if it does not parse or
    holds a subquery."""
    parser = getattr(getattr(jvm.org.apache.spark.sql.catalyst.parser, "CatalystSqlParser$"), "MODULE$")
    try:
        tree = parser.parseExpression(expression)
    except Exception as exc:  # noqa: BLE001 - py4j wraps Spark's ParseException
        text = str(getattr(exc, "java_exception", exc))
        lines = [EXCEPTION_NAME.sub("", ln).strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        raise ExpressionRefused(f"is not a Spark SQL expression ({lines[0] if lines else 'syntax error'})") from None
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        kind = str(node.getClass().getName())
        if kind.rsplit(".", 1)[-1] in SUBQUERY_NODES:
            raise ExpressionRefused("holds a subquery, which a transform cannot run")
        if kind == FUNCTION_NODE:
            parts = node.nameParts()
            found.append(".".join(str(parts.apply(i)) for i in range(parts.size())).lower())
        stack.extend(_children(node))
    return found


def refusal(jvm: Any, expression: str, builtins: frozenset[str], parse_errors: bool = True) -> str | None:
    """Why ``expression`` may not run in a transform, or None if it may (also None for one that
    does not parse when ``parse_errors`` is False: Spark's own error then says where)."""
    try:
        calls = called_functions(jvm, expression)
    except ExpressionRefused as exc:
        return str(exc) if parse_errors or "subquery" in str(exc) else None
    for name in calls:
        if name in REFLECTION:
            return f"calls {name}, which runs arbitrary Java code"
        if name not in builtins:
            return f"calls {name}, which is not one of Spark's built-in functions"
    return None
