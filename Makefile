# 共同缔造 platform. `make run` starts everything locally; `make test` runs the whole suite; `make help`
# lists every target (the text after `## ` on a target's line). Each creates or refreshes the virtual
# environment first.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp
# where `make cli` links the `cocreate` command
CLI_BIN ?= $(HOME)/.local/bin

.PHONY: help venv run demo cli test test-unit test-integration bench bench-quick bench-instructions screenshots rebuild clean translations

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,local,web]'
	touch $(STAMP)

venv: $(STAMP) ## create or refresh the virtual environment .venv (every other target does it first)

help: ## list the targets
	@echo "共同缔造 — make targets (the first one you run creates .venv; Python 3.11+):"
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-z][a-z-]*:.*## / { printf "  make %-17s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo "Ports and places: GATEWAY_PORT (8000), WEB_PORT (8080), COCREATE_DATA_DIR (var); see docs/configuration.md."

run: venv ## the whole platform locally: broker, services, gateway (:8000), web client (:8080); Ctrl-C stops it
	bin/run-platform

# Fill the running platform (`make run` in another terminal) with a demo community, through the
# gateway only: at COCREATE_URL, else http://127.0.0.1:$GATEWAY_PORT (8000). Run it again to add
# what is missing.
demo: venv ## fill the running platform with the demo community 新阳社区 (again: adds only what is missing)
	@$(VENV)/bin/python -m cocreate_client.demo

# `cocreate` is installed in .venv/bin; this links it into CLI_BIN (default ~/.local/bin) so that it
# is on PATH in every shell. It never replaces a file there that is not a link. The other way:
# `source .venv/bin/activate` (this shell only).
cli: venv ## put the `cocreate` command on PATH: a link in ~/.local/bin (CLI_BIN=dir to choose)
	@mkdir -p "$(CLI_BIN)"
	@if [ -e "$(CLI_BIN)/cocreate" ] && [ ! -L "$(CLI_BIN)/cocreate" ]; then \
	  echo "make cli: $(CLI_BIN)/cocreate exists and is not a link; left as it is (or use: source $(VENV)/bin/activate)"; \
	  exit 1; fi
	@ln -sfn "$(abspath $(VENV))/bin/cocreate" "$(CLI_BIN)/cocreate"
	@echo "make cli: $(CLI_BIN)/cocreate -> $(abspath $(VENV))/bin/cocreate"
	@case ":$$PATH:" in \
	  *":$(CLI_BIN):"*) echo "$(CLI_BIN) is on your PATH: try  cocreate --help";; \
	  *) echo "$(CLI_BIN) is not on your PATH yet: add  export PATH=\"$(CLI_BIN):\$$PATH\"  to your shell's profile";; \
	esac

test: venv ## the whole test suite (the browser tests need Chromium: docs/testing.md)
	$(VENV)/bin/python -m pytest tests

test-unit: venv ## the unit tests only
	$(VENV)/bin/python -m pytest tests/unit

test-integration: venv ## the integration and end-to-end tests
	$(VENV)/bin/python -m pytest tests/integration tests/e2e

# Benchmarks (not part of `make test`): every figure beside its anchor, measured in the same run;
# writes bench/results/latest.{json,md}. About 11 minutes on 2 cores; bench-quick is a smoke run.
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e '.[dev,local,web,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## the benchmarks, into bench/results/ and bench/README.md (about 11 minutes)
	$(VENV)/bin/python -m bench --readme

bench-quick: $(BENCH_STAMP) ## a smoke run of the benchmarks
	$(VENV)/bin/python -m bench --quick

bench-instructions: $(BENCH_STAMP) ## instructions per write in a gunicorn worker, by callgrind (about 3 minutes)
	$(VENV)/bin/python -m bench.instructions

# The web client's main pages, in Chinese, at 375×812 and 1280×800, into docs/screenshots/ (shown in
# web/README.md and README.md): the local platform on free ports, the demo community, Chromium.
screenshots: venv ## the web client's main pages into docs/screenshots/ (needs Chromium)
	$(VENV)/bin/python bin/screenshots

# Every service's read models dropped and replayed from its event store (COCREATE_DATA_DIR, default
# var, or the services' database URLs), one service after the other, with a line per step.
rebuild: venv ## rebuild every service's read models from its event store
	@start=$$(date +%s); n=0; \
	for s in projects volunteers feedback; do n=$$((n + 1)); \
	  echo "[$$n/3] $$s: replaying its event store into its read models …"; \
	  $(VENV)/bin/python -m services.$$s rebuild || { echo "make rebuild: $$s failed (see above)"; exit 1; }; \
	done; \
	echo "make rebuild: done in $$(( $$(date +%s) - start )) s — the read models of projects, volunteers and feedback"

clean: ## delete var/ (the local platform's data) and pytest's cache
	rm -rf var .pytest_cache

# The web client's messages: extract every _("...") from web/ and update the Chinese catalogue
# (new messages arrive untranslated; tests/unit/test_web_i18n.py fails until they are translated).
translations: venv ## extract the web client's messages and update its Chinese catalogue
	mkdir -p var
	$(VENV)/bin/pybabel extract -k _l -k lazy_gettext --no-location --sort-output -F web/babel.cfg -o var/web-messages.pot .
	$(VENV)/bin/pybabel update --no-fuzzy-matching --ignore-obsolete -w 120 -i var/web-messages.pot -d web/translations -l zh_Hans_CN
