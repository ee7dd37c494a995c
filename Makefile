# The two commands of the README: `make run` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help run test bench lint format install clean-instance

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) ## Create the virtual environment with the pinned dependencies

run: $(STAMP) ## Start PostgreSQL, Redis, web and worker with demo data (Ctrl-C stops all)
	$(PY) scripts/devstack.py run

test: $(STAMP) ## Run the whole test suite against real PostgreSQL and Redis
	$(PY) scripts/devstack.py test -- $(PYTEST_ARGS)

bench: $(STAMP) ## Payments benchmark (needs DATABASE_URL/REDIS_URL, or runs on the embedded servers)
	$(PY) scripts/devstack.py bench -- $(BENCH_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-instance: ## Delete local data (embedded database, Redis, mail, uploads)
	rm -rf instance
