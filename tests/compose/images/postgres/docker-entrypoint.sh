#!/bin/bash
# The stand-in's entrypoint (see Containerfile): the official image's first-start steps, in its order.
set -euo pipefail

if [ "${1:0:1}" = "-" ]; then
  set -- postgres "$@"
fi
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ "$1" = "postgres" ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?is not set: the first start needs POSTGRES_PASSWORD (set it in .env)}"
    export POSTGRES_USER=${POSTGRES_USER:-postgres}
    export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    echo "initialising the database cluster in $PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options, as in the official image
    as_postgres initdb --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-} > /dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start > /dev/null
    export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
    if [ "$POSTGRES_DB" != "postgres" ]; then
      as_postgres psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -c "CREATE DATABASE \"$POSTGRES_DB\"" > /dev/null
    fi
    for file in /docker-entrypoint-initdb.d/*; do
      case "$file" in
        *.sh)
          echo "running $file"
          if [ -x "$file" ]; then as_postgres "$file"; else . "$file"; fi
          ;;
        *.sql)
          echo "running $file"
          as_postgres psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$file"
          ;;
        *) ;;
      esac
    done
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    echo "database cluster initialised"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$@"
fi
exec "$@"
