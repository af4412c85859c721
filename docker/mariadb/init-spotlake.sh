#!/usr/bin/env bash
# First start of the mariadb service (docker-compose.yaml), after the image has created
# MARIADB_DATABASE and MARIADB_USER with ALL on that database only: the source user may also
# list the server's open transactions (information_schema.INNODB_TRX needs PROCESS), which the
# extraction reads so that a window never ends past a transaction that may still commit rows
# into it (read.wait_for_open_transactions, docs/configuration.md).
set -euo pipefail

mariadb --protocol=socket --user=root --password="$MARIADB_ROOT_PASSWORD" <<SQL
GRANT PROCESS ON *.* TO '${MARIADB_USER}'@'%';
SQL
