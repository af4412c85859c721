"""Probe job: read a MariaDB table over JDBC and write it as Parquet to s3a.

Arguments: SECRET_ID TABLE OUTPUT_URI. The JDBC credentials come from the
Secrets Manager secret, never from the arguments. boto3 and the MySQL driver come with the
batch (its ``pydeps`` archive and ``jars``), as for the spotlake jobs.
"""

from __future__ import annotations

import json
import os
import sys

from pyspark import SparkFiles
from pyspark.sql import SparkSession


def main() -> None:
    secret_id, table, output = sys.argv[1:4]
    spark = SparkSession.builder.appName("spotlake-probe").getOrCreate()
    sys.path.insert(0, os.path.join(SparkFiles.getRootDirectory(), "pydeps"))
    import boto3

    secret = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"])
    df = (
        spark.read.format("jdbc")
        .option("url", f"jdbc:mysql://{secret['host']}:{secret['port']}/{secret['database']}")
        .option("driver", "com.mysql.cj.jdbc.Driver")
        .option("dbtable", table)
        .option("user", secret["username"])
        .option("password", secret["password"])
        .load()
    )
    df.write.mode("overwrite").parquet(output)
    spark.stop()


if __name__ == "__main__":
    main()
