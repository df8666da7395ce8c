# One-command set-up: `make run` (install + default pipeline), `make test` (install + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml

.PHONY: install run test dashboard clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m pipeline run $(CONFIG)

test: install
	$(BIN)/python -m pytest -q

dashboard: install
	$(BIN)/python -m streamlit run dashboard/app.py --browser.gatherUsageStats false

clean:
	rm -rf $(VENV) runs .pytest_cache
