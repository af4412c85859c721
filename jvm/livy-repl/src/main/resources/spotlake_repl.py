"""The Python side of the local stack's Livy REPL driver (jvm/livy-repl, ReplDriver.java).

Bound to the session's SparkContext through the driver's py4j gateway, it runs one statement at a
time: a JSON line ``{"id": n, "code": "..."}`` on stdin, one JSON line of Livy's statement output
on the protocol channel. Whatever the code prints (and the value of a last expression) is the
output's ``text/plain``, as in Livy's own PySpark interpreter. Each statement's Spark jobs run in
the job group named by its id, which is what cancelling a statement cancels.
"""

import ast
import io
import json
import os
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout

# The protocol goes to the original stdout; anything written to file descriptor 1 later (the JVM,
# C extensions) goes to stderr, which is the driver's log.
protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
os.dup2(2, 1)
sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), encoding="utf-8", line_buffering=True)

from pyspark.conf import SparkConf  # noqa: E402
from pyspark.context import SparkContext  # noqa: E402
from pyspark.java_gateway import launch_gateway  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

gateway = launch_gateway()
jsc = gateway.entry_point.javaSparkContext()
sc = SparkContext(gateway=gateway, jsc=jsc, conf=SparkConf(_jvm=gateway.jvm, _jconf=jsc.getConf()))
spark = SparkSession(sc, gateway.entry_point.sparkSession())
namespace = {"__name__": "__main__", "sc": sc, "spark": spark, "sqlContext": spark}


def run(statement_id, code):
    captured = io.StringIO()
    sc.setJobGroup(str(statement_id), "statement %d" % statement_id, True)
    try:
        with redirect_stdout(captured), redirect_stderr(captured):
            tree = ast.parse(code, "<stdin>", "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, "<stdin>", "exec"), namespace)  # noqa: S102 - a REPL runs code
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<stdin>", "eval"), namespace)  # noqa: S307
                if value is not None:
                    print(repr(value))
    except BaseException as exc:  # noqa: BLE001 - every failure is the statement's result
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return {"status": "error", "execution_count": statement_id, "ename": type(exc).__name__,
                "evalue": str(exc), "traceback": lines[1:] if len(lines) > 1 else lines}
    return {"status": "ok", "execution_count": statement_id, "data": {"text/plain": captured.getvalue().rstrip("\n")}}


protocol.write(json.dumps({"ready": True}) + "\n")
for line in sys.stdin:
    if not line.strip():
        continue
    request = json.loads(line)
    protocol.write(json.dumps(run(request["id"], request["code"])) + "\n")
