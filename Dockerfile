# One image for the code location, the webserver, the daemon and every run container.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client git docker-cli docker-compose \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ultra_ops
COPY pyproject.toml README.md ./
COPY ultra_ops ./ultra_ops
RUN pip install --no-cache-dir .
COPY workspace.yaml ultra_ops.toml ./
COPY deploy ./deploy
ENV DAGSTER_HOME=/opt/dagster/home
COPY dagster.yaml /opt/dagster/home/dagster.yaml
