# The two commands of the README: `make run` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

TRANSLATIONS := portal/translations
CATALOGUES := $(wildcard $(TRANSLATIONS)/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGUES:.po=.mo)
PYBABEL := $(VENV)/bin/pybabel
# The gettext keywords beyond pybabel's defaults (_, gettext, ngettext, pgettext, ...).
BABEL_KEYWORDS := -k _l -k lazy_gettext -k lazy_pgettext:1c,2 -k lazy_ngettext:1,2

.PHONY: help run test bench soak lint format install clean-instance translations

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

# The compiled catalogues (.mo) are build outputs, never committed: every set-up compiles them.
$(TRANSLATIONS)/%/LC_MESSAGES/messages.mo: $(TRANSLATIONS)/%/LC_MESSAGES/messages.po $(STAMP)
	$(PYBABEL) compile -f -i $< -o $@

install: $(STAMP) $(COMPILED) ## Create the virtual environment with the pinned dependencies

translations: $(STAMP) ## Re-extract the messages (messages.pot) and merge them into every language's messages.po
	$(PYBABEL) extract -F babel.cfg $(BABEL_KEYWORDS) --sort-by-file --no-wrap \
		--project=payplat --copyright-holder=payplat -o $(TRANSLATIONS)/messages.pot .
	$(PYBABEL) update --no-wrap --ignore-obsolete -i $(TRANSLATIONS)/messages.pot -d $(TRANSLATIONS)
	$(PY) scripts/untranslated.py $(TRANSLATIONS)

run: $(STAMP) $(COMPILED) ## Start PostgreSQL, Redis, web and worker with demo data (Ctrl-C stops all)
	$(PY) scripts/devstack.py run

test: $(STAMP) $(COMPILED) ## Run the whole test suite against real PostgreSQL and Redis
	$(PY) scripts/devstack.py test -- $(PYTEST_ARGS)

bench: $(STAMP) ## Payments benchmark (needs DATABASE_URL/REDIS_URL, or runs on the embedded servers)
	$(PY) scripts/devstack.py bench -- $(BENCH_ARGS)

soak: $(STAMP) ## Mixed API traffic for a while, then the ledger and audit checks (SOAK_ARGS="--seconds 60 -c 8")
	$(PY) scripts/devstack.py soak -- $(SOAK_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-instance: ## Delete local data (embedded database, Redis, mail, uploads)
	rm -rf instance
