# One image for the code location, the webserver, the daemon and every run container.
# Debian 12 (bookworm) pinned: its PostgreSQL client is the servers' major version (PG_MAJOR).
# PYTHON_IMAGE: where python:3.11-slim-bookworm cannot be pulled, a stand-in built from Debian's own
# packages (deploy/images/python, `python -m ultra_ops.local_images build`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# The major version of every PostgreSQL server the image backs up or restores (postgres:15 in
# docker-compose.yml and deploy/ultra-ai.compose.yml): pg_dump refuses a newer server, and ultra-ops
# refuses a pg_dump or pg_restore older than the server before it starts (engine/backups/dump.py).
ARG PG_MAJOR=15

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# bookworm has the docker CLI in docker.io (docker-cli is a package only from trixie on). openssh-client:
# runs reach environments on hosts of their own over ssh (engine/hosts/).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" git docker.io docker-compose openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && pg_dump --version | grep -q "(PostgreSQL) ${PG_MAJOR}\." \
    && useradd --system --uid 10001 --create-home --home-dir /home/ultra_ops --shell /usr/sbin/nologin ultra_ops

WORKDIR /opt/ultra_ops
COPY pyproject.toml README.md ./
COPY ultra_ops ./ultra_ops
# Air-gapped builds: wheels made beforehand (`pip wheel`) in a `wheelhouse` folder of the build context and
# --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/tmp/wheelhouse install from those alone
# (ultra_ops/local_images/platform.py does so here). README.md is listed so the COPY has a source without one.
COPY README.md wheelhouse* /tmp/wheelhouse/
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=
RUN pip install --no-cache-dir . && rm -rf /tmp/wheelhouse
COPY workspace.yaml ultra_ops.toml ./
COPY deploy ./deploy
ENV DAGSTER_HOME=/opt/dagster/home
COPY dagster.yaml /opt/dagster/home/dagster.yaml
# Dagster writes compute logs and schedule state under DAGSTER_HOME; nothing else in the image is writable.
RUN chown -R ultra_ops:ultra_ops /opt/dagster/home

# Not root: the Docker API is reached through the socket proxy (DOCKER_HOST), never a mounted socket.
USER 10001:10001
