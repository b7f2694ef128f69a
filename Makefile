# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
NBM_HOME ?= ./.nbm
DEMO := $(NBM_HOME)/demo
DEMO_USERS ?= 20000
DEMO_DAYS ?= 60
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# nbm runs offline: MLflow's usage telemetry stays off.
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install run test test-deps lint demo clean

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=24'
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The embedded defaults: a simulated demo world, generated once.
$(DEMO)/events.parquet: | install
	$(BIN)/nbm simulate --out $(DEMO) --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed 7

demo: $(DEMO)/events.parquet

PORT ?= 3000

run: install demo
	$(BIN)/nbm validate --data $(DEMO)
	NBM_HOME=$(NBM_HOME) $(BIN)/nbm train --data $(DEMO) --if-missing
	NBM_HOME=$(NBM_HOME) $(BIN)/nbm serve --data $(DEMO) --port $(PORT)

lint: install
	$(BIN)/lint-imports

# Debian packages that tests drive, installed when absent and apt-get may run (as root):
# redis-server for the Redis state store, chromium for the browser check of `nbm report`. Without them those
# tests are skipped, saying why.
DEBIAN_TEST_PACKAGES := redis-server chromium
test-deps:
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for the tests:$$missing"; \
	    apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; } || \
	      echo "could not install$$missing: the tests that need it will be skipped"; \
	  else echo "not installed:$$missing (needs root and apt-get): the tests that need it will be skipped"; fi; \
	fi

test: install test-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .import_linter_cache
