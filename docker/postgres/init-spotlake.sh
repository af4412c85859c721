#!/usr/bin/env bash
# First start of the postgres service (docker-compose.yaml): the roles and databases
# that spotlake_dev.localstack.services.bootstrap_postgres creates for the native stack.
#   airflow  owns database airflow   (Airflow's metadata database)
#   spotlake owns database spotlake  (the stream sink)
#   spotlake owns database lake_catalog (the lake's Iceberg JDBC catalog)
# Names and passwords come from .env; psql quotes them (:"name" / :'literal').
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  -v sink_user="$SPOTLAKE_POSTGRES_USER" \
  -v sink_password="$SPOTLAKE_POSTGRES_PASSWORD" \
  -v sink_database="$SPOTLAKE_POSTGRES_DATABASE" \
  -v catalog_database="$SPOTLAKE_CATALOG_DATABASE" \
  -v airflow_password="$SPOTLAKE_AIRFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE :"sink_user" LOGIN PASSWORD :'sink_password';
CREATE DATABASE :"sink_database" OWNER :"sink_user";
CREATE DATABASE :"catalog_database" OWNER :"sink_user";
SQL
