# The README's two commands: `make demo` and `make test`. Each does its own set-up
# (a virtualenv in .venv with driftmon installed from this checkout) first: the demo
# the package alone, the tests the package with its test extras.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# The same install command as the Dockerfile's (tests/test_packaging.py checks it).
INSTALL := pip install --no-cache-dir
# PyTorch's CPU build, as the Dockerfile installs it: PyPI's torch for Linux pulls in CUDA
# (17 nvidia packages, several GB). Only torch is looked up there (--no-deps: its own
# dependencies come from PyPI with the rest); the version is pyproject.toml's pin.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')

.PHONY: install demo test lint clean

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: $(VENV)/pyvenv.cfg pyproject.toml
	$(BIN)/$(INSTALL) --no-deps --extra-index-url $(TORCH_INDEX_URL) '$(TORCH)'
	touch $@

# The demo's install: the package alone (no byte-code compiled ahead: Python writes what it imports).
$(VENV)/.installed-demo: $(VENV)/.torch pyproject.toml
	$(BIN)/$(INSTALL) --no-compile -e .
	touch $@

# The tests' install: the package with the test extras (every engine's driver, scipy, the linters).
$(VENV)/.installed-test: $(VENV)/.torch pyproject.toml
	$(BIN)/$(INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/driftmon demo $(DEMO_ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
