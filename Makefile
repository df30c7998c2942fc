PYTHON ?= python3

.PHONY: install install-dev demo lint test

install:
	PYTHON=$(PYTHON) bash scripts/install.sh

install-dev:
	PYTHON=$(PYTHON) bash scripts/install.sh --dev

# The whole pipeline on the embedded toy world: offline, CPU, minutes.
demo: install
	$(PYTHON) -m sae_translate demo

lint:
	$(PYTHON) -m ruff check sae_translate tests benchmarks
	$(PYTHON) -m ruff format --check sae_translate tests benchmarks
	$(PYTHON) -m mypy

# Lint, then the whole suite (CPU; builds a tiny world once). `pytest -m "not slow"` is the quick loop.
test: install-dev lint
	$(PYTHON) -m pytest -q
