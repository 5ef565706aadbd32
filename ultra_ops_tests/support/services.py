"""Where the tests find PostgreSQL and Redis: loopback by default, elsewhere through environment
variables (ULTRA_TEST_PGHOST, ULTRA_TEST_PGPORT, ULTRA_TEST_PGUSER, ULTRA_TEST_REDIS_URL). Pointing
them at a closed port shows which tests need no service: those marked `unit` pass all the same."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_MIGRATIONS = REPO / "ultra_ops" / "sample_service" / "migrations"

PG = {
    "host": os.environ.get("ULTRA_TEST_PGHOST", "127.0.0.1"),
    "port": int(os.environ.get("ULTRA_TEST_PGPORT", "5432")),
    "user": os.environ.get("ULTRA_TEST_PGUSER", "postgres"),
}
REDIS_URL = os.environ.get("ULTRA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
