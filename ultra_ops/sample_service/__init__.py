"""A small stand-in for the Ultra AI backend, so the whole release cycle runs without Docker.

HTTP on 127.0.0.1:$PORT with /health, /health?detail=true (PostgreSQL and Redis), a versioned
API endpoint, a migrations folder and a log file under $ULTRA_LOG_DIR.
"""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
