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

.PHONY: install run test lint demo clean

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

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .import_linter_cache
