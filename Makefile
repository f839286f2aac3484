# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv and install what is missing; after the first install they
# work offline (the stamp files stop pip from running again).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKERS ?= 1
# `make run` is the site on this machine: a lone process keeps to one CPU too
# (chatsite/serve.py, keep_to_one_cpu). Plain `python -m chatsite.serve` pins
# only the workers of --workers N, as lone processes may share a machine.
PIN_CPUS ?= all
PIP    := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: run test lint check pytest bench bench-compare bench-page chromium catalog clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	@echo ""
	@echo "  Chat is running: open http://$(HOST):$(PORT)/"
	@echo "  (the first account you sign up becomes the admin)"
	@echo ""
	PIN_CPUS=$(PIN_CPUS) $(BIN)/python -m chatsite.serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

# The known providers and models (disabled until they have a key).
catalog: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py install_catalog

# Debian's Chromium for the browser tests; installed when we may, else the
# browser tests skip and say why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will skip"; \
	  else echo "warning: chromium not found; browser tests will skip"; fi; }

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: $(VENV)/.dev
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

pytest: $(VENV)/.dev chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint check pytest

bench: $(VENV)/.dev
	$(BIN)/python -m bench.relay $(BENCH_ARGS)

# This tree against an earlier commit, both configurations: make bench-compare BASE=HEAD~3
BASE ?= HEAD~1
bench-compare: $(VENV)/.dev
	$(BIN)/python -m bench.compare --baseline $(BASE) $(BENCH_ARGS)

bench-page: $(VENV)/.dev
	$(BIN)/python -m bench.page_load

clean:
	rm -rf $(VENV) .local staticfiles artifacts .pytest_cache .ruff_cache
