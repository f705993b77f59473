# The two Quick-start commands: `make run` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

$(BIN)/stream-triage: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/stream-triage

run: install
	$(BIN)/stream-triage serve $(ARGS)

test: install
	$(BIN)/ruff check stream_triage tests benchmarks grafana
	$(BIN)/pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check stream_triage tests benchmarks grafana

bench: install
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
