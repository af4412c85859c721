# spotlake local stack. `make up` brings everything up; `make test` runs the tests.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(ROOT)/plugins:$(ROOT)
STACK := $(PY) -m spotlake_dev.localstack

.PHONY: up test down status bootstrap lint unit integration e2e bench compose-test

bootstrap:
	@scripts/bootstrap.sh

up: bootstrap
	@$(STACK) up core
	@$(PY) -m spotlake_dev.demo setup
	@$(STACK) up airflow
	@$(STACK) status
	@echo
	@$(PY) -c 'from spotlake.stack import StackLayout as L; s = L.default(); print("Airflow UI: http://127.0.0.1:%d\nLogin: user admin, password in %s/airflow/passwords.json\nLogs: %s/  PIDs: %s/  Stop: make down" % (s.port("airflow"), s.data_dir, s.log_dir, s.run_dir))'

test: bootstrap
	@$(PY) -m pytest tests/unit tests/integration tests/e2e --durations=15

# The pure unit tier: one process, no service, no JVM, no other program. The unit tests marked
# spark (a local Spark JVM) or tools (Maven, Java, compose, pip, a CLI...) run with `make test`.
unit: bootstrap
	@$(PY) -m pytest tests/unit -m "not spark and not tools"

integration: bootstrap
	@$(PY) -m pytest tests/integration

e2e: bootstrap
	@$(PY) -m pytest tests/e2e

# docker-compose.yaml built and run under Podman (docs/docker.md): images from a local Debian base,
# the stack up, one extraction window and one stream micro-batch, everything removed after.
compose-test: bootstrap
	@tests/compose/setup.sh
	@PATH=$(VENV)/bin:$$PATH $(PY) -m pytest tests/compose -m compose --durations=5

down:
	@if [ -x $(PY) ]; then $(STACK) down; else echo "nothing to stop (no virtualenv yet)"; fi

status:
	@$(STACK) status

lint: bootstrap
	@$(VENV)/bin/ruff check plugins spotlake_dev dags spark_jobs tests bench scripts
	@$(VENV)/bin/ruff format --check plugins spotlake_dev dags spark_jobs tests bench scripts
	@$(VENV)/bin/mypy
	@$(VENV)/bin/lint-imports --no-cache
