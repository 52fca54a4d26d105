# Two commands for a fresh machine with only Python:
#   make demo   set up .venv and run the main job (synthetic task, CPU)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: setup
	$(BIN)/python experiments/pipeline.py --workdir $(RUN)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests
	$(BIN)/python -m pytest -q --nbmake $(PYTEST_ARGS) notebooks

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) runs .pytest_cache
