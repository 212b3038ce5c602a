# Two commands matter: `make demo` (set up, run the pipeline, leave the endpoint up) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= jobs/configs/demo.yaml
ENTITIES ?= 5000

.PHONY: demo test down lint bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps re-install only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/mlplatform up
	$(BIN)/mlplatform data --entities $(ENTITIES)
	$(BIN)/mlplatform submit pipeline --config $(CONFIG)
	@echo
	@$(BIN)/mlplatform endpoint churn
	@echo "stop everything with: make down"

down:
	@if [ -x $(BIN)/mlplatform ]; then $(BIN)/mlplatform down; else echo "nothing to stop (no $(VENV))"; fi

test: install-dev
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .

bench: install-dev
	@for b in benchmarks/*.py; do [ -e "$$b" ] || continue; echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: down
	rm -rf $(VENV) .mlplatform
