# One-command set-up: `make run` (install + default pipeline), `make test` (install + tests, Ray included).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
# The dashboard listens on this machine only; DASHBOARD_ADDRESS=0.0.0.0 exposes it (see README, Dashboard).
DASHBOARD_ADDRESS ?= 127.0.0.1
DASHBOARD_PORT ?= 8501

.PHONY: install install-ray run test bench dashboard clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

# Ray is optional for users (executor: ray); the tests run the Ray executor, so `make test` installs it.
$(VENV)/.installed-ray: $(VENV)/.installed requirements-ray.txt
	$(BIN)/python -m pip install --quiet -r requirements-ray.txt
	touch $@

install-ray: $(VENV)/.installed-ray

run: install
	$(BIN)/python -m pipeline run $(CONFIG)

test: install-ray
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pipeline bench --events 1000000 --items 1000 --compare-events 300000

dashboard: install
	$(BIN)/python -m streamlit run dashboard/app.py --browser.gatherUsageStats false \
		--server.address $(DASHBOARD_ADDRESS) --server.port $(DASHBOARD_PORT)

clean:
	rm -rf $(VENV) runs .pytest_cache
