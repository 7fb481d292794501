# 共同缔造 platform. `make run` starts everything locally; `make test` runs the whole suite.
# Both create or refresh the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: venv run demo test test-unit test-integration bench bench-quick rebuild clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,local,web]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	bin/run-platform

# Fill the running platform (`make run` in another terminal) with a demo community, through the
# gateway only.
demo: venv
	$(VENV)/bin/python -m cocreate_client.demo

test: venv
	$(VENV)/bin/python -m pytest tests

test-unit: venv
	$(VENV)/bin/python -m pytest tests/unit

test-integration: venv
	$(VENV)/bin/python -m pytest tests/integration tests/e2e

# Benchmarks (not part of `make test`): every figure beside its anchor, measured in the same run;
# writes bench/results/latest.{json,md}. Under 10 minutes on 2 cores; bench-quick is a smoke run.
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,local,web,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(VENV)/bin/python -m bench --readme

bench-quick: $(BENCH_STAMP)
	$(VENV)/bin/python -m bench --quick

rebuild: venv
	for s in projects volunteers feedback; do $(VENV)/bin/python -m services.$$s rebuild || exit 1; done

clean:
	rm -rf var .pytest_cache
