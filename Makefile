# The two commands of the README: `make serve` and `make test`. Each sets up what it needs.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e ".[dev,postgres,redis,otel]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/flowweaver serve

# Two parts: on two workers, whole files each (module fixtures stay on one worker), every test
# that may run beside others; then, alone, the ones marked serial (one restarts PostgreSQL).
# Each test keeps pyproject's timeout. A plain `pytest` still runs everything, serially.
test: $(STAMP)
	$(VENV)/bin/pytest -n 2 --dist loadfile -m "not serial"
	$(VENV)/bin/pytest -m serial

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	for b in $$(grep -l '__main__' benchmarks/*.py); do $(VENV)/bin/python $$b --quick || exit 1; done
