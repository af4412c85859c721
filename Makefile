# spotlake local stack. `make up` brings everything up; `make test` runs the tests.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(ROOT)/plugins:$(ROOT)
STACK := $(PY) -m spotlake.localstack

.PHONY: up test down status bootstrap lint unit integration e2e bench

bootstrap:
	@scripts/bootstrap.sh

up: bootstrap
	@$(STACK) up core
	@$(PY) -m spotlake.demo setup
	@$(STACK) up airflow
	@$(STACK) status
	@echo
	@echo "Airflow UI: http://127.0.0.1:$$($(PY) -c 'from spotlake.localstack.layout import StackLayout as L; print(L.default().port("airflow"))')"
	@echo "Login: user admin, password in .stack/data/airflow/passwords.json"
	@echo "Logs: .stack/logs/  PIDs: .stack/run/  Stop: make down"

test: bootstrap
	@$(PY) -m pytest tests/unit tests/integration tests/e2e

unit: bootstrap
	@$(PY) -m pytest tests/unit

integration: bootstrap
	@$(PY) -m pytest tests/integration

e2e: bootstrap
	@$(PY) -m pytest tests/e2e

down:
	@if [ -x $(PY) ]; then $(STACK) down; else echo "nothing to stop (no virtualenv yet)"; fi

status:
	@$(STACK) status

lint:
	@$(VENV)/bin/ruff check plugins dags spark_jobs tests bench
