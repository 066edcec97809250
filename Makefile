# coremetrics developer entry points. `make` alone lists them.
SHELL := /bin/bash
VENV  := .venv
RUFF  := $(VENV)/bin/ruff
ARGS  ?=

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt services-up services-down clean venv bench-ingest bench-tables \
	bench-delivery

help:
	@echo "make run            run the app (scripts/run.sh)"
	@echo "make test           full test run: pytest, smoke, ruff, migrations check"
	@echo "                    extra pytest args: make test ARGS=\"-k foo\""
	@echo "make lint           ruff check + ruff format --check"
	@echo "make fmt            ruff format + ruff check --fix"
	@echo "make services-up    start throwaway PostgreSQL + Redis (env: var/test-services/env)"
	@echo "make services-down  stop them and remove var/test-services"
	@echo "make bench-ingest   1,000,000 events through collect and consolidation (docs/performance.md)"
	@echo "                    ARGS='--batch 10': 100,000 visitors of 10 events instead of 10,000 of 100"
	@echo "make bench-tables   lookup tables of 3 campaigns over 1,000,000 profiles, built and published"
	@echo "make bench-delivery the query endpoint against raw WSGI and Django, gunicorn and granian (wrk)"
	@echo "make clean          remove var/ and .venv"

venv:
	@bash scripts/bootstrap.sh

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh $(ARGS)

lint: venv
	$(RUFF) check .
	$(RUFF) format --check .

fmt: venv
	$(RUFF) format .
	$(RUFF) check --fix .

services-up:
	@bash scripts/services.sh start

services-down:
	@bash scripts/services.sh stop

clean: services-down
	rm -rf var .venv

bench-ingest: venv
	bash scripts/services.sh start
	set -a && . var/test-services/env && set +a && $(VENV)/bin/python bench/ingest.py $(ARGS)

bench-tables: venv
	bash scripts/services.sh start
	set -a && . var/test-services/env && set +a && $(VENV)/bin/python bench/tables.py

bench-delivery: venv
	bash scripts/services.sh start
	set -a && . var/test-services/env && set +a && $(VENV)/bin/python bench/delivery.py
