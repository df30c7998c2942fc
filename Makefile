PYTHON ?= python3

.PHONY: install demo test

install:
	PYTHON=$(PYTHON) bash scripts/install.sh

# The whole pipeline on the embedded toy world: offline, CPU, minutes.
demo: install
	$(PYTHON) -m sae_translate demo

test: install
	$(PYTHON) -m pytest -q
