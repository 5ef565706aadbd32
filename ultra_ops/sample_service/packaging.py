"""The sample backend as the Ultra AI repository ships it: its source, a requirements file and a
Dockerfile, written into a repository (the demo's stand-in `var/ultra-ai`), so a compose deploy
builds `ultra-ai/backend:vX.Y.Z` from the release's commit.

The Dockerfile starts FROM the official python image; PYTHON_IMAGE (a build argument, which the
compose file fills from ULTRA_PYTHON_IMAGE) names a local stand-in where nothing can be pulled,
which already holds the requirements, so pip finds them satisfied and needs no package index.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# The same pins as deploy/images/python/requirements.txt (the local python image installs them).
REQUIREMENTS = "psycopg[binary]==3.3.9\nredis==8.2.0\nhttpx==0.29.0\nasync-timeout==5.0.1\n"
DOCKERFILE = """\
# The Ultra AI backend (the sample service). PYTHON_IMAGE: the official image on real hosts.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY backend/ ./
RUN mkdir -p /app/logs
ENV PORT=8000 ULTRA_BIND_HOST=0.0.0.0 ULTRA_LOG_DIR=/app/logs PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["python", "-m", "ultra_ops.sample_service"]
"""
DOCKERIGNORE = ".git\n**/__pycache__\n"


def write_image_source(repo: Path) -> list[str]:
    """Write (or refresh) the backend's image source in `repo`; the paths written, relative to it."""
    target = repo / "backend" / "ultra_ops"
    if target.exists():
        shutil.rmtree(target)
    (target / "sample_service").mkdir(parents=True)
    (target / "__init__.py").write_text('"""The Ultra AI backend (sample)."""\n')
    shutil.copytree(
        PACKAGE,
        target / "sample_service",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "packaging.py"),
    )
    (repo / "requirements.txt").write_text(REQUIREMENTS)
    (repo / "Dockerfile").write_text(DOCKERFILE)
    (repo / ".dockerignore").write_text(DOCKERIGNORE)
    return ["backend", "requirements.txt", "Dockerfile", ".dockerignore"]
