# Two entry points: `make demo` and `make test`. Both create .venv and install when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: install browser demo lint format test test-fast bench clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The explorer's browser tests drive Debian's chromium through its chromedriver. Installed only when
# missing; where apt-get cannot run (not root, offline) the tests then fail naming what is missing.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver \
	  || echo "make: could not install chromium and chromium-driver; the explorer's browser tests will fail"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/tagscale demo --workdir $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint browser
	$(PY) -m pytest

test-fast: $(STAMP) browser
	$(PY) -m pytest -m 'not slow'

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
