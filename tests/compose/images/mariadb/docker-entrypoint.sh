#!/bin/bash
# The stand-in's entrypoint (see Containerfile): the official image's first-start steps, in its order.
set -euo pipefail

if [ "${1:0:1}" = "-" ]; then
  set -- mariadbd "$@"
fi
if [ "$1" != "mariadbd" ] && [ "$1" != "mysqld" ]; then
  exec "$@"
fi

sql_literal() {  # a value as an SQL string literal
  local value=${1//\\/\\\\}
  printf "'%s'" "${value//\'/\\\'}"
}

datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock
chown mysql:mysql "$datadir" /run/mysqld

if [ ! -d "$datadir/mysql" ]; then
  : "${MARIADB_ROOT_PASSWORD:?is not set: the first start needs MARIADB_ROOT_PASSWORD (set it in .env)}"
  if [ -n "${MARIADB_USER:-}" ] && [ -z "${MARIADB_PASSWORD:-}" ]; then
    echo "MARIADB_USER is set without MARIADB_PASSWORD: set both in .env" >&2
    exit 1
  fi
  echo "initialising the database in $datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db --auth-root-authentication-method=socket > /dev/null
  "$@" --user=mysql --skip-networking --socket="$socket" &
  pid=$!
  for _ in $(seq 60); do
    mariadb-admin --socket="$socket" ping --silent 2> /dev/null && break
    sleep 1
  done
  port=$("$@" --verbose --help 2> /dev/null | awk '$1 == "port" {print $2}')
  health_password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  root=$(sql_literal "$MARIADB_ROOT_PASSWORD")
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD($root);"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY $root; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    echo "CREATE USER 'healthcheck'@'127.0.0.1' IDENTIFIED BY '$health_password';"
    echo "CREATE USER 'healthcheck'@'localhost' IDENTIFIED BY '$health_password';"
    echo "GRANT USAGE ON *.* TO 'healthcheck'@'127.0.0.1', 'healthcheck'@'localhost';"
    if [ -n "${MARIADB_DATABASE:-}" ]; then
      echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;"
    fi
    if [ -n "${MARIADB_USER:-}" ]; then
      echo "CREATE USER '${MARIADB_USER}'@'%' IDENTIFIED BY $(sql_literal "$MARIADB_PASSWORD");"
      if [ -n "${MARIADB_DATABASE:-}" ]; then
        echo "GRANT ALL ON \`${MARIADB_DATABASE}\`.* TO '${MARIADB_USER}'@'%';"
      fi
    fi
  } | mariadb --socket="$socket" --user=root
  printf '[mariadb-client]\nport=%s\nsocket=%s\nuser=healthcheck\npassword=%s\n' "$port" "$socket" "$health_password" \
    > "$datadir/.my-healthcheck.cnf"
  chown mysql:mysql "$datadir/.my-healthcheck.cnf"
  chmod 600 "$datadir/.my-healthcheck.cnf"
  for file in /docker-entrypoint-initdb.d/*; do
    case "$file" in
      *.sh)
        echo "running $file"
        if [ -x "$file" ]; then "$file"; else . "$file"; fi
        ;;
      *.sql)
        echo "running $file"
        mariadb --socket="$socket" --user=root --password="$MARIADB_ROOT_PASSWORD" ${MARIADB_DATABASE:+"$MARIADB_DATABASE"} < "$file"
        ;;
      *) ;;
    esac
  done
  kill "$pid"
  wait "$pid"
  echo "database initialised"
fi

exec "$@" --user=mysql
