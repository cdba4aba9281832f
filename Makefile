# Two commands for a fresh machine: `make demo` and `make test`. Both create the environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/install-system.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	bash scripts/install-system.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/attnvision compare --preset quick --out runs/demo

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=10

clean:
	rm -rf $(VENV) runs .pytest_cache
