#!/bin/bash
# The stand-in's health check: the two tests of the official healthcheck.sh that
# docker-compose.yaml uses, as the healthcheck user the first start created.
set -uo pipefail
cnf=/var/lib/mysql/.my-healthcheck.cnf
[ -f "$cnf" ] || { echo "not initialised yet ($cnf missing)" >&2; exit 1; }
for test in "$@"; do
  case "$test" in
    --connect)
      mariadb --defaults-extra-file="$cnf" --protocol=tcp --host=127.0.0.1 --skip-column-names -e 'SELECT 1' > /dev/null || exit 1
      ;;
    --innodb_initialized)
      ready=$(mariadb --defaults-extra-file="$cnf" --skip-column-names -e \
        "SELECT 1 FROM information_schema.ENGINES WHERE engine = 'InnoDB' AND support IN ('YES', 'DEFAULT', 'ENABLED')")
      [ "$ready" = "1" ] || exit 1
      ;;
    *)
      echo "healthcheck.sh of this stand-in knows --connect and --innodb_initialized, not $test" >&2
      exit 1
      ;;
  esac
done
