# Two commands for a fresh machine with Python 3.11: `make run` and `make test`.
# With DATABASE_URL / REDIS_URL unset, an embedded Postgres and Redis start under var/.
# `.env`, when present, is read by every target as by every command (project/settings/env.py): the
# embedded servers start only where DATABASE_URL / REDIS_URL are unset in both.
-include .env
export $(shell sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' .env 2>/dev/null)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install lock run test faults-production faults-production-rabbitmq schemathesis-deep image compose-test services services-stop bootstrap lint clean bench

# requirements.txt is the development lock (requirements/dev.txt, with hashes): pip checks every
# package's hash. The image installs requirements/runtime.txt alone (Dockerfile).
$(VENV)/.installed: requirements.txt requirements/*.txt requirements-encoder.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'), not 3.11:" \
	  "the hashed locks are compiled for 3.11. Install Python 3.11, or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-encoder.txt
	touch $@

install: $(VENV)/.installed  ## what `make run` and `make test` need, from the hashed lock

LOCK_SETS := runtime training bench dev
lock: install  ## compile requirements/*.in into the hashed locks (requirements/*.txt)
	cd requirements && for set in $(LOCK_SETS); do \
	  uv pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	    --no-header --annotation-style line $$set.in -o $$set.txt || exit 1; done

services: install  ## start the embedded Postgres and Redis (a no-op when URLs are set)
	@[ -n "$$DATABASE_URL" ] && [ -n "$$REDIS_URL" ] || python -m project.embedded start

services-stop:
	python -m project.embedded stop

bootstrap: services  ## migrate, load the intent pack, create the demo client and admin user
	python manage.py migrate --noinput
	python manage.py collectstatic --noinput -v0
	python manage.py load_intents
	python manage.py retrain --if-missing
	python manage.py bootstrap_demo

run: bootstrap  ## everything: API :8000, a worker per role (Procfile), beat, Flower :5555, sample requests
	rm -rf var/prometheus && mkdir -p var/prometheus
	PROMETHEUS_MULTIPROC_DIR="$(CURDIR)/var/prometheus" FLOWER_BASIC_AUTH="$$(cat var/flower_auth)" honcho -f Procfile start

test: services  ## the whole suite, against real Postgres, Redis and Celery workers
	python -m pytest

faults-production: install  ## the fault suite at production settings, ~20 min (docs/reliability.md)
	python -m pytest -m faults_production tests/system/reliability/test_fault_suite_production.py tests/system/reliability/test_callback_faults.py

# The same with RabbitMQ as the broker (127.0.0.1:5672, guest, as .ci/run): the system gets a vhost of its own.
faults-production-rabbitmq: install  ## the fault suite at production settings on RabbitMQ (docs/reliability.md)
	vhost="faults-$$$$-$$(date +%s)"; \
	rabbitmqctl -q add_vhost "$$vhost" && rabbitmqctl -q set_permissions -p "$$vhost" guest ".*" ".*" ".*" || exit 1; \
	RELIABILITY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/$$vhost" \
	  python -m pytest -m faults_production tests/system/reliability/test_fault_suite_production.py tests/system/reliability/test_callback_faults.py; \
	rc=$$?; rabbitmqctl -q delete_vhost "$$vhost"; exit $$rc

# The schema and the code agree: Schemathesis --checks all, every phase, at 400 examples per operation
# and phase (CI's run in `make test` uses 30), against a live server of the app; 0 failures of any kind.
schemathesis-deep: services  ## Schemathesis --checks all at 400 examples per operation and phase (docs/security.md)
	RELIABILITY_EXAMPLES=400 python -m pytest tests/system/reliability/test_schemathesis_api.py -s -q

image: install  ## the image and the services' image with podman, from Debian's packages and the hashed lock (no registry)
	deploy/images/build

compose-test: install  ## builds the images, runs compose.yaml under podman and checks it (docs/deploy.md)
	python -m pytest -m compose tests/deploy/test_compose_stack.py -s

bench: install  ## the benchmark, on servers of its own: results under var/bench/ (docs/performance.md)
	python -m tooling.bench $(BENCH_ARGS)

lint:
	ruff check . && ruff format --check .

clean:
	rm -rf var $(VENV)
