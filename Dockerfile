# One image for the code location, the webserver, the daemon and every run container.
# Debian 12 (bookworm) pinned: its PostgreSQL client is the servers' major version (PG_MAJOR).
FROM python:3.11-slim-bookworm

# The major version of every PostgreSQL server the image backs up or restores (postgres:15 in
# docker-compose.yml and deploy/ultra-ai.compose.yml): pg_dump refuses a newer server, and ultra-ops
# refuses a pg_dump or pg_restore older than the server before it starts (engine/backups/dump.py).
ARG PG_MAJOR=15

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" git docker-cli docker-compose \
    && rm -rf /var/lib/apt/lists/* \
    && pg_dump --version | grep -q "(PostgreSQL) ${PG_MAJOR}\." \
    && useradd --system --uid 10001 --create-home --home-dir /home/ultra_ops --shell /usr/sbin/nologin ultra_ops

WORKDIR /opt/ultra_ops
COPY pyproject.toml README.md ./
COPY ultra_ops ./ultra_ops
RUN pip install --no-cache-dir .
COPY workspace.yaml ultra_ops.toml ./
COPY deploy ./deploy
ENV DAGSTER_HOME=/opt/dagster/home
COPY dagster.yaml /opt/dagster/home/dagster.yaml
# Dagster writes compute logs and schedule state under DAGSTER_HOME; nothing else in the image is writable.
RUN chown -R ultra_ops:ultra_ops /opt/dagster/home

# Not root: the Docker API is reached through the socket proxy (DOCKER_HOST), never a mounted socket.
USER 10001:10001
