# Sourced by ./dev and .ci/run: install what a fresh machine lacks, start the local services.
# Idempotent and quiet when everything is already there.

ULTRA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ULTRA_ROOT/.venv"

say() { echo "ultra-ops setup: $*" >&2; }

ensure_services() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
}

ensure_system_packages() {
  # docker-compose (Debian's) checks the compose files this project writes; no engine is needed for that.
  if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing docker-compose"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 \
      || say "could not install docker-compose; its tests will be skipped"
  fi
  # Debian's chromium for the browser test (Playwright drives this binary; it downloads no browser).
  if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing chromium"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || say "could not install chromium; the browser test will be skipped"
  fi
}

ensure_venv() {
  local stamp="$VENV/.installed-$(sha256sum "$ULTRA_ROOT/pyproject.toml" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "installing ultra_ops and its dependencies into .venv"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q -e "$ULTRA_ROOT[test,k8s]" 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c "import ultra_ops, dagster, psycopg, redis, httpx, pytest" \
      || { say "installation failed"; exit 1; }
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}
