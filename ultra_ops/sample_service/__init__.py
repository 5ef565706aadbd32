"""A small stand-in for the Ultra AI backend, so the whole release cycle runs without Docker.

HTTP on 127.0.0.1:$PORT with /health, /health?detail=true (PostgreSQL and Redis), a versioned
API endpoint, a migrations folder and a log file under $ULTRA_LOG_DIR; a login and a protected
endpoint, a rate limit, a prompt answered by an LLM provider (`llm_standin` is one on loopback),
uploads and /metrics, which the checklist and the smoke tests exercise.
"""
