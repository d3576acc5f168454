# One way to run things. `make demo` and `make test` create or reuse .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the checkout first, then the user's own path (a module: factory of theirs must still import)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: venv system demo dag-test airflow cluster test test-scenarios test-fast bench lint stop status clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

## Debian packages (installed once, when missing): Chromium and ChromeDriver for the browser test of the
## Airflow UI page; Redis and PostgreSQL, the Celery broker and the metadata database of `make cluster` and its test.
system:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v redis-server >/dev/null \
	  && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    chromium chromium-driver redis-server postgresql >/dev/null; }

## Run compile_pipeline on the built-in MobileNetV2 with local MLflow + S3 (left running; `make stop`).
demo: venv
	$(PY) -m devtools.demo

## One run of any DAG with `airflow dags test`, in the demo's environment: make dag-test DAG=promote_model CONF='{...}'
dag-test: venv
	$(PY) -m devtools.dag_test $(DAG) '$(CONF)'

## Airflow as a user runs it: standalone (UI, scheduler, DAG processor) with the DAGs, plugin, pool and
## connections, beside the local MLflow and S3 (reused if running). Prints the URL and login.
airflow: venv
	$(PY) -m devtools.airflow_local

## Airflow on the CeleryExecutor as on a fleet: PostgreSQL, Redis, scheduler, DAG processor, API server, and two
## workers that are hosts of their own (compile; cpu + default), sharing nothing but S3, beside the local MLflow
## and S3. Prints the URL and login.
cluster: venv system
	$(PY) -m devtools.cluster

## The whole test suite: unit, integration against real local services, airflow dags test, and the deployment
## scenarios (the Celery fleet, Airflow standalone's Asset chain, the pipeline variants). What CI runs.
test: venv system
	$(PY) -m pytest

## Only the deployment scenarios (also part of `make test`): the Celery fleet (worker loss, 8 runs at once, a run
## store on one worker's disk), Airflow standalone's Asset chain and schedule, and the pipeline variants.
test-scenarios: venv system
	$(PY) -m pytest -m scenario

## Only the tests that need no services and no DAG run.
test-fast: venv
	$(PY) -m pytest -m "not integration"

## The benchmark harness on MobileNetV2, ResNet-50 and all-MiniLM-L6-v2 over every available target; prints figures.
bench: venv
	$(PY) -m devtools.bench

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Stop the services the demo started.
stop:
	@if [ -x $(PY) ]; then $(PY) -m devtools.services stop; else echo "nothing to stop (no .venv)"; fi

status: venv
	$(PY) -m devtools.services status

clean: stop
	rm -rf .work
