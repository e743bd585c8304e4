# django-tasks-q: one command for each thing a developer or CI does.
#
#   make test      the whole suite, both CI jobs (see below); sets up the venvs itself
#   make demo      migrate SQLite, start a worker, enqueue the demo tasks, print results
#   make lint      ruff
#   make bench     quick side-by-side run with the peers (bench-full: the full one)
#
# Job (a) `test-311`: Python 3.11 + Django 5.2, SQLite + django:// (testproject defaults).
# Job (b) `test-312`: Python 3.12 + Django 6.x against PostgreSQL, with the Redis and
#         RabbitMQ tests enabled (they skip locally when a service is down; under
#         CI=true they fail instead).
#
# Each venv is (re)installed only when pyproject.toml changes: a stamp file records it.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
VENV6  := .venv-dj6
STAMP  := $(VENV)/.tasks-q-installed
STAMP6 := $(VENV6)/.tasks-q-installed
PY     := $(VENV)/bin/python
PY6    := $(VENV6)/bin/python

# Python 3.11 for job (a): python3.11 if it runs, else python3 when it is >= 3.11.
PYTHON311 ?= $(shell for c in python3.11 python3; do \
	  p=$$($$c -c 'import sys; print(sys.executable if sys.version_info[:2] >= (3, 11) else "")' 2>/dev/null) \
	  && [ -n "$$p" ] && { echo "$$p"; break; }; done)

# Python 3.12 for job (b). `python3.12` may be a pyenv shim that fails unless
# PYENV_VERSION is set, so try it plain, then with PYENV_VERSION, then pyenv's folders.
PYTHON312 ?= $(shell for c in "python3.12" "env PYENV_VERSION=3.12.1 python3.12" \
	  $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null) \
	  /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	  p=$$($$c -c 'import sys; assert sys.version_info[:2] == (3, 12); print(sys.executable)' 2>/dev/null) \
	  && [ -n "$$p" ] && { echo "$$p"; break; }; done)

PYTEST_ARGS ?=

.PHONY: help venv venv-dj6 test test-311 test-312 _test-312 demo lint migrations-check bench bench-own bench-full clean distclean

help:
	@echo "make test | test-311 | test-312 | demo | lint | migrations-check | bench | clean | distclean"

# -- virtualenvs -------------------------------------------------------------
$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON311)" ]; then echo "Python >= 3.11 not found (tried python3.11, python3)." >&2; exit 1; fi
	@if [ ! -x $(PY) ]; then echo "Creating $(VENV) with $(PYTHON311)"; $(PYTHON311) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]" "Django>=5.2,<6"
	@touch $@

$(STAMP6): pyproject.toml
	@if [ -z "$(PYTHON312)" ]; then echo "Python 3.12 not found (tried python3.12, PYENV_VERSION=3.12.1 python3.12, ~/.pyenv/versions/3.12*)." >&2; exit 1; fi
	@if [ ! -x $(PY6) ]; then echo "Creating $(VENV6) with $(PYTHON312)"; $(PYTHON312) -m venv $(VENV6); fi
	$(PY6) -m pip install -q --upgrade pip
	$(PY6) -m pip install -q -e ".[dev]" "Django>=6,<7"
	@touch $@

venv: $(STAMP)
venv-dj6: $(STAMP6)

# -- tests -------------------------------------------------------------------
# `make test` runs both jobs. Without a Python 3.12 on the machine, job (b) is
# skipped with a message locally and fails under CI=true.
# Both jobs run even when the first fails, so one run shows both outcomes.
test:
	@status=0; \
	$(MAKE) --no-print-directory test-311 || status=1; \
	$(MAKE) --no-print-directory test-312 || status=1; \
	exit $$status

test-311: $(STAMP)
	@echo "== job (a): Python 3.11 + Django 5.2, SQLite + django:// =="
	TQ_DATABASE=sqlite $(PY) -m pytest -q -ra $(PYTEST_ARGS)

test-312:
	@if [ -z "$(PYTHON312)" ] && [ ! -x $(PY6) ]; then \
	  if [ "$${CI:-}" = "true" ]; then echo "job (b) needs Python 3.12, which was not found" >&2; exit 1; fi; \
	  echo "== job (b) skipped: no Python 3.12 found (install it, or set PYTHON312=/path/to/python3.12) =="; \
	else $(MAKE) --no-print-directory _test-312; fi

_test-312: $(STAMP6)
	@db=postgres; \
	if ! $(PY6) -c 'import socket,os; socket.create_connection((os.environ.get("POSTGRES_HOST","127.0.0.1"), int(os.environ.get("POSTGRES_PORT","5432"))), 2)' 2>/dev/null; then \
	  if [ "$${CI:-}" = "true" ]; then echo "job (b): PostgreSQL is not reachable (CI=true)" >&2; exit 1; fi; \
	  echo "PostgreSQL is not reachable: job (b) runs on SQLite instead"; db=sqlite; \
	fi; \
	echo "== job (b): Python 3.12 + Django 6, $$db, Redis/RabbitMQ tests enabled =="; \
	TQ_DATABASE=$$db $(PY6) -m pytest -q -ra $(PYTEST_ARGS)

# -- the rest ----------------------------------------------------------------
lint: $(STAMP)
	$(VENV)/bin/ruff check django_tasks_q tests testproject bench

migrations-check: $(STAMP)
	TQ_DATABASE=sqlite $(PY) manage.py makemigrations --check --dry-run

demo: $(STAMP)
	TQ_DATABASE=sqlite $(PY) manage.py migrate --run-syncdb --verbosity 0
	TQ_DATABASE=sqlite $(PY) manage.py demo

# Our own figures (enqueue, transports, worker): quick, no peers.
bench-own: $(STAMP)
	@for f in bench/enqueue.py $(wildcard bench/transport_*.py) $(wildcard bench/worker_*.py); do \
	  echo "== $$f --quick =="; $(PY) $$f --quick || exit 1; done

# The side-by-side suite with the peers (bench/README.md): quick (<5 min) and full (<30 min).
bench: $(STAMP)
	$(PY) -m bench.suite --quick

bench-full: $(STAMP)
	$(PY) -m bench.suite --full

clean:
	rm -rf build dist *.egg-info db.sqlite3* test-db.sqlite3*

distclean: clean
	rm -rf $(VENV) $(VENV6)
