# Two entry points: `make demo` and `make test`. Both create .venv and install when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: install browser demo lint format test test-fast test-numerics bench clean

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

# The tests that compare floats, again on the other kernel paths this CPU has: TensorFlow without
# oneDNN, and oneDNN capped at AVX2 where the CPU has AVX-512 (most cloud workers have it, many
# developers' machines do not). `make test` runs them on the default path.
NUMERICS_TESTS := tests/test_fast_layers.py tests/test_dsp.py tests/test_network.py tests/test_pretrained.py \
	tests/test_inference.py tests/test_transforms.py tests/test_multiworker.py::test_the_steps_take_any_replica_batch_including_an_empty_one \
	tests/test_tag.py::test_multi_processing_workers_give_the_default_runs_outputs \
	tests/test_portable.py::test_featurize_and_tag_through_a_job_service_and_worker_pool

test-numerics: $(STAMP)
	TF_ENABLE_ONEDNN_OPTS=0 $(PY) -m pytest -q $(NUMERICS_TESTS)
	@if grep -qw avx512f /proc/cpuinfo; then \
	  echo "ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q $(NUMERICS_TESTS)"; \
	  ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q $(NUMERICS_TESTS); \
	else echo "test-numerics: no AVX-512 on this CPU; its oneDNN path is already AVX2 (make test)"; fi

# The edit-test loop: every test under about 3 s (markers in pytest.ini), the Beam stages on tiny
# inputs (TestPipeline) included, no whole pipeline run, no training, no browser, spread over every
# core (pytest-xdist, one worker process per core). It ends with the count of Beam pipelines it ran.
# `make test` runs everything, in one process (its Beam runs and training take both cores each).
test-fast: $(STAMP)
	$(PY) -m pytest -m 'not slow and not browser' -n auto --durations=15

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
