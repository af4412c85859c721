"""The Kafka client settings for Amazon MSK load in Spark's JVM with the published jars.

No MSK here: the check is that Kafka's own client accepts the options the stream job gives
Spark's Kafka source (it loads the login module and the callback handler as it is built), so a
missing jar or a wrong class name fails here rather than on the first deployment.
"""

from __future__ import annotations

from typing import Any

import pytest
from py4j.protocol import Py4JJavaError

from spark_jobs.clickstream.kafka_security import Credentials, KafkaSecurity


def build_consumer(spark: Any, options: dict[str, str]) -> Any:
    jvm = spark._jvm
    props = jvm.java.util.Properties()
    settings = {
        "bootstrap.servers": "127.0.0.1:1",
        "key.deserializer": "org.apache.kafka.common.serialization.ByteArrayDeserializer",
        "value.deserializer": "org.apache.kafka.common.serialization.ByteArrayDeserializer",
        **{key.removeprefix("kafka."): value for key, value in options.items()},
    }
    for key, value in settings.items():
        props.setProperty(key, value)
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    cls = loader.loadClass("org.apache.kafka.clients.consumer.KafkaConsumer")
    ctor = next(
        c
        for c in cls.getConstructors()
        if c.getParameterCount() == 1 and c.getParameterTypes()[0].getName() == "java.util.Properties"
    )
    args = spark.sparkContext._gateway.new_array(jvm.java.lang.Object, 1)
    args[0] = props
    return ctor.newInstance(args)


@pytest.mark.parametrize(
    "section",
    [
        {"protocol": "SASL_SSL", "mechanism": "AWS_MSK_IAM"},
        {"protocol": "SASL_SSL", "mechanism": "SCRAM-SHA-512", "secret_id": "AmazonMSK_x"},
        {"protocol": "SSL"},
    ],
    ids=["iam", "scram", "tls"],
)
def test_the_kafka_client_accepts_the_msk_options(spark: Any, monkeypatch: pytest.MonkeyPatch, section: dict[str, str]) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    security = KafkaSecurity.parse(section, "kafka_security", lambda f, p: ValueError(f"{f}: {p}"))
    consumer = build_consumer(spark, security.spark_options(Credentials("u", "p")))
    consumer.close()


def test_a_wrong_callback_handler_is_refused(spark: Any) -> None:
    """The check above can fail: a class that is not on the class path is refused by the client."""
    options = KafkaSecurity(protocol="SASL_SSL", mechanism="AWS_MSK_IAM").spark_options()
    options["kafka.sasl.client.callback.handler.class"] = "software.amazon.msk.auth.iam.NoSuchHandler"
    with pytest.raises(Py4JJavaError, match="could not be found"):
        build_consumer(spark, options)
