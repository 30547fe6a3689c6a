# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make train   create .venv, install, and train the quickstart agent
#   make test    create .venv, install, and run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install train test lint clean

$(BIN)/dreamzero: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/dreamzero

train: install
	$(BIN)/dreamzero train $(ARGS)

test: install
	$(BIN)/pytest -n 2 tests

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
