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

# Docker for the compose tests and the local compose environments: the engine, Debian's compose v1,
# mmdebstrap (local images: nothing can be pulled here) and a registry; dockerd started by hand
# where nothing else starts it (no systemd). Never fatal: without root, apt or a daemon that
# answers, the Docker tests skip and say why (ULTRA_DOCKER_UNAVAILABLE holds the reason).
DOCKER_LOG="$ULTRA_ROOT/var/docker/dockerd.log"
ensure_docker() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing ${missing[*]}"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${missing[@]}") \
        >/dev/null 2>&1 || say "could not install ${missing[*]}"
    fi
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    export ULTRA_DOCKER_UNAVAILABLE="no Docker engine (dockerd) and no root with apt-get to install docker.io"
    say "$ULTRA_DOCKER_UNAVAILABLE: the Docker tests will be skipped"; return 0
  fi
  if ! timeout 10 docker info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      export ULTRA_DOCKER_UNAVAILABLE="dockerd is not answering and only root can start it"
      say "$ULTRA_DOCKER_UNAVAILABLE: the Docker tests will be skipped"; return 0
    fi
    mkdir -p "$(dirname "$DOCKER_LOG")"
    say "starting dockerd (log: $DOCKER_LOG)"
    # Its own session, so it outlives this shell; no systemd here to supervise it.
    setsid dockerd >>"$DOCKER_LOG" 2>&1 < /dev/null &
    echo $! > "$(dirname "$DOCKER_LOG")/dockerd.pid"
    for _ in $(seq 1 60); do timeout 5 docker info >/dev/null 2>&1 && break; sleep 0.5; done
    if ! timeout 10 docker info >/dev/null 2>&1; then
      export ULTRA_DOCKER_UNAVAILABLE="dockerd did not answer within 30 s (see $DOCKER_LOG)"
      say "$ULTRA_DOCKER_UNAVAILABLE: the Docker tests will be skipped"; return 0
    fi
  fi
  # The local base images (python, postgres, redis), built once and cached by their recipes' hash.
  if [ -x "$VENV/bin/python" ] && command -v mmdebstrap >/dev/null 2>&1; then
    "$VENV/bin/python" -m ultra_ops.local_images build >/dev/null \
      || say "could not build the local images; the Docker tests will say why"
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
