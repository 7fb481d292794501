# 共同缔造 platform. `make run` starts everything locally; `make test` runs the whole suite.
# Both create or refresh the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: venv run demo test test-unit test-integration bench bench-quick screenshots rebuild clean translations

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

# The web client's main pages, in Chinese, at 375×812 and 1280×800, into docs/screenshots/ (shown in
# web/README.md and README.md): the local platform on free ports, the demo community, Chromium.
screenshots: venv
	$(VENV)/bin/python bin/screenshots

rebuild: venv
	for s in projects volunteers feedback; do $(VENV)/bin/python -m services.$$s rebuild || exit 1; done

clean:
	rm -rf var .pytest_cache

# The web client's messages: extract every _("...") from web/ and update the Chinese catalogue
# (new messages arrive untranslated; tests/unit/test_web_i18n.py fails until they are translated).
translations: venv
	mkdir -p var
	$(VENV)/bin/pybabel extract -k _l -k lazy_gettext --no-location --sort-output -F web/babel.cfg -o var/web-messages.pot .
	$(VENV)/bin/pybabel update --no-fuzzy-matching --ignore-obsolete -w 120 -i var/web-messages.pot -d web/translations -l zh_Hans_CN
