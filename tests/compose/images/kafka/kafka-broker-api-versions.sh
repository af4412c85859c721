#!/bin/bash
# kafka-broker-api-versions.sh of the Kafka distribution, on the stand-in's jars.
exec java -Xmx128m -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*' \
  org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
