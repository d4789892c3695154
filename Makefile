# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/compress demo

test: venv
	$(BIN)/ruff check edgecompress tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: venv
	$(BIN)/ruff check edgecompress tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
