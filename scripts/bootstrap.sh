#!/usr/bin/env bash
# Install what the local stack needs and is missing: Debian packages, the Python
# virtualenv with pinned packages, and the JVM jars resolved by Maven.
# Each step says its name; a failing step stops with that name and its output.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${SPOTLAKE_VENV:-$ROOT/.venv}
PYTHON=${SPOTLAKE_PYTHON:-python3.11}

step() { printf '==> %s\n' "$*"; }
fail() { printf 'make failed at step: %s\n%s\n' "$1" "${2:-}" >&2; exit 1; }

run_step() {  # run_step NAME CMD...: run CMD, keep its output, name the step if it fails
  local name=$1; shift
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    fail "$name" "$(tail -n 40 "$log")"
  fi
  rm -f "$log"
}

# 1. Debian packages: MariaDB (MySQL source), PostgreSQL, Java (a JDK), Maven and Chromium.
missing=()
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
# javac and jar: the local Livy's REPL driver is compiled from jvm/livy-repl on first use.
command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# The operations page's browser test: Playwright drives Debian's chromium (no browser download).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    fail "apt-get install ${missing[*]}" \
      "These Debian packages are missing and installing them needs root. Fix: sudo apt-get install -y ${missing[*]}"
  fi
  step "apt-get install ${missing[*]}"
  run_step "apt-get update" apt-get update -q
  run_step "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. Python virtualenv with the pinned packages (re-installed when the pins change: requirements.txt,
#    the files of requirements/ it includes, constraints.txt) and the project itself, editable
#    (pyproject.toml: plugins/ and the project root on the virtualenv's sys.path).
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || fail "python check" "spotlake needs Python 3.11 ($PYTHON is $("$PYTHON" --version 2>&1)). Fix: install python3.11 or set SPOTLAKE_PYTHON."
if [ ! -x "$VENV/bin/python" ]; then
  step "create virtualenv $VENV"
  run_step "python -m venv $VENV" "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.spotlake-$(cat requirements.txt requirements/*.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  step "pip install -r requirements.txt -c constraints.txt"
  run_step "pip install --upgrade pip" "$VENV/bin/pip" install -q --upgrade pip==25.3
  run_step "pip install -r requirements.txt -c constraints.txt" \
    "$VENV/bin/pip" install -q -r requirements.txt -c constraints.txt
  run_step "pip install --no-deps -e ." "$VENV/bin/pip" install -q --no-deps -e .
  rm -f "$VENV"/.spotlake-*
  touch "$stamp"
fi

# 3. JVM jars (Kafka, Livy, Spark connectors) resolved by Maven into .stack/jars.
step "resolve JVM jars with Maven (jvm/*/pom.xml)"
PYTHONPATH="$ROOT/plugins" "$VENV/bin/python" -m spotlake_dev.localstack jars \
  || fail "maven resolve of the JVM jars" "see the message above"
