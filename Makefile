# Two commands do all the set-up on a fresh machine with Python >= 3.11:
#   make train   create .venv, install, and train the quickstart agent
#   make test    create .venv, install, and run the tests
# Both install the exact versions in constraints.txt; `make constraints` refreshes them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK_VENV := .venv-constraints
ARGS ?=

.PHONY: install train test lint constraints clean

# Training needs the core alone; the tests and lint add the dev extra (pytest, ruff, Ray,
# MinAtar) on top.
$(VENV)/.core: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.core

train: install
	$(BIN)/dreamzero train $(ARGS)

test: $(VENV)/.dev
	@echo "tested with (constraints.txt):"
	@$(BIN)/pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|flax|optax|mctx|orbax-checkpoint) '
	$(BIN)/pytest -n 2 --durations=15 tests  # the slowest tests, to keep the suite under 10 min

lint: $(VENV)/.dev
	$(BIN)/ruff check .

# The newest versions pyproject.toml's ranges allow, resolved in a throwaway venv (so
# nothing installed by hand in .venv creeps in); run `make test` on them before committing.
constraints:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -e '.[dev]'
	{ grep '^#' constraints.txt; $(LOCK_VENV)/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)
	$(MAKE) install

clean:
	rm -rf $(VENV) $(LOCK_VENV) *.egg-info .pytest_cache
