"""User transforms of the ``shop`` database's pipelines."""

from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from spark_jobs.user_transforms import register


@register("shop.normalise_email", columns=["email"])
def normalise_email(df: DataFrame) -> DataFrame:
    """Lower-case and trim ``email``; null stays null."""
    return df.withColumn("email", F.lower(F.trim(F.col("email"))))
