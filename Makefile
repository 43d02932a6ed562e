# Notify — the two commands are `make demo` and `make test`; both set up what they need first.
# Needs: Python 3.11+, Java 17+, Node.js 20+ (see README). Nothing else is installed by hand.

SHELL := /bin/bash
ROOT := $(CURDIR)
PYTHON ?= python3
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
STATE := $(ROOT)/.notify
STAMP := $(VENV)/.installed
NODE_STAMP := $(STATE)/node/.installed
DEMO_USERS ?= 2000
AIRFLOW_PORT ?= 8080

# Services, Airflow and connections are configured by notify_tools/localenv.py from local.env,
# so `make` targets, the `notify` CLI and the tests all see the same settings.
export NOTIFY_STATE_DIR := $(STATE)
export PATH := $(VENV)/bin:$(PATH)

.PHONY: setup browser-deps demo test test-fast lint services-up services-down services-status airflow export-tables bench emr-bundle mwaa-bundle mwaa-requirements lock clean

## setup: virtualenv with the pinned stack, dynalite, Airflow metadata DB (fast when already done)
setup: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@command -v java >/dev/null || { echo "Java 17+ is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 resolves to the CPU wheel: pip reads PIP_FIND_LINKS / --find-links (see README).
	$(PY) -m pip install --quiet --compile -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(NODE_STAMP): notify_tools/node/package.json notify_tools/node/package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 20+ with npm is required for dynalite"; exit 1; }
	@mkdir -p $(STATE)/node
	cp notify_tools/node/package.json notify_tools/node/package-lock.json $(STATE)/node/
	cd $(STATE)/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## browser-deps: Debian's Chromium for tests/browser (Playwright drives /usr/bin/chromium; it never downloads one)
browser-deps:
	@if command -v chromium >/dev/null; then echo "chromium: $$(chromium --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "tests/browser will skip: install Debian's chromium package (apt-get install chromium) as root"; fi

## demo: start local services and run the whole daily cycle through Airflow on generated data
demo: setup
	$(VENV)/bin/notify services up
	$(VENV)/bin/notify demo --users $(DEMO_USERS)

## test: the whole suite (unit, DAG integrity, integration on real local services, end-to-end)
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -p no:cacheprovider -m "not integration and not e2e and not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

services-up: setup
	$(VENV)/bin/notify services up
services-down:
	$(VENV)/bin/notify services down
services-status:
	$(VENV)/bin/notify services status

## airflow: the Airflow UI on http://127.0.0.1:8080 with Notify's DAGs (Ctrl-C stops it)
airflow: setup
	$(VENV)/bin/notify services up
	$(VENV)/bin/notify airflow --port $(AIRFLOW_PORT)

## export-tables: every table to Parquet under .notify/export for analysts
export-tables: setup
	$(VENV)/bin/notify export --out $(STATE)/export

## bench: the benchmark scripts whose results are in README
bench: setup
	$(PY) benchmarks/ingest.py --users 2000,20000
	$(PY) benchmarks/recs_quality.py --users 3000
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/plan_dispatch.py
	$(PY) benchmarks/stream_ingest.py --messages 40000 --users 10000
	$(PY) benchmarks/closed_loop.py --users 2000 --days 7

## emr-bundle: what NOTIFY_EMR_CODE_URI must hold for EMR Serverless (job files, include.zip, deps archive)
# (include.zip holds include/ alone: notify_tools/ is local tooling and is never shipped)
emr-bundle: setup
	$(PY) -m notify_tools.packaging emr-bundle --out $(STATE)/emr
	@echo "upload: aws s3 sync $(STATE)/emr/ <NOTIFY_EMR_CODE_URI>/"

## mwaa-requirements: regenerate requirements-mwaa.txt from pyproject.toml
mwaa-requirements: setup
	$(PY) -m notify_tools.packaging mwaa-requirements --out requirements-mwaa.txt

## mwaa-bundle: what goes to the MWAA bucket (dags/ with include/, plugins.zip, requirements.txt, startup.sh)
mwaa-bundle: setup
	$(PY) -m notify_tools.packaging mwaa-bundle --out $(STATE)/mwaa
	@echo "upload: aws s3 sync $(STATE)/mwaa/ s3://<mwaa-bucket>/ (then update the environment's requirements/plugins/startup versions)"

## lock: re-resolve requirements.in into the pinned requirements.txt
lock:
	rm -rf $(STATE)/lockenv && $(PYTHON) -m venv $(STATE)/lockenv
	$(STATE)/lockenv/bin/pip install --quiet -r requirements.in
	{ echo "# Fully pinned, resolved set (pip check clean). Regenerate: make lock. Top-level choices: requirements.in"; \
	  $(STATE)/lockenv/bin/pip freeze | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > requirements.txt

clean:
	-$(VENV)/bin/notify services down
	rm -rf $(STATE) $(VENV)
