# The README's two commands: `make demo` and `make test`. Each does its own set-up
# (a virtualenv in .venv with driftmon installed from this checkout) first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# The same install command as the Dockerfile's (tests/test_packaging.py checks it).
INSTALL := pip install --no-cache-dir

.PHONY: install demo test lint clean

$(BIN)/driftmon: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(INSTALL) -e '.[test]'
	touch $@

install: $(BIN)/driftmon

demo: install
	$(BIN)/driftmon demo $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
