"""The environment's Redis cache: its state from INFO, and clearing it.

The release document's `redis-cli info | grep used_memory_human` and `FLUSHALL`, made safe: a
clear removes the keys matching a pattern with SCAN and UNLINK (never KEYS, which blocks Redis
for the whole keyspace), and everything only when asked for by name. "Everything" is the
environment's own Redis database (FLUSHDB): FLUSHALL would also empty the other environments'
databases on a shared server, as the shipped config's three environments share one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ultra_ops.engine.errors import InputError, OperationError
from ultra_ops.engine.lazy import lazy_module
from ultra_ops.engine.secrets import Log, NullLog, Redactor
from ultra_ops.engine.settings import Environment

redis = lazy_module("redis")

_TIMEOUT_S = 5.0
_BATCH = 500


@dataclass(frozen=True)
class CacheStats:
    environment: str
    used_memory: int
    used_memory_human: str
    used_memory_peak: int
    maxmemory: int  # 0: no limit
    fragmentation_ratio: float
    evicted_keys: int
    expired_keys: int
    hits: int
    misses: int
    keys_per_db: dict[str, int]

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return round(self.hits / total, 4) if total else None

    @property
    def memory_used_of_max(self) -> float | None:
        return round(self.used_memory / self.maxmemory, 4) if self.maxmemory else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": self.hit_ratio, "memory_used_of_max": self.memory_used_of_max}


def _client(env: Environment) -> redis.Redis:
    if env.redis is None:
        raise InputError(f"environment {env.name} has no [redis] in the config")
    settings = env.redis
    password = settings.password()
    return redis.Redis.from_url(
        settings.url,
        username=settings.username,
        password=password,
        socket_timeout=_TIMEOUT_S,
        socket_connect_timeout=_TIMEOUT_S,
    )


def cache_stats(env: Environment, *, redact: Redactor | None = None) -> CacheStats:
    redact = redact or Redactor.for_environment(env)
    try:
        with _client(env) as client:
            info = client.info()
    except redis.RedisError as exc:
        raise OperationError(redact(f"Redis of {env.name}: {type(exc).__name__}: {exc}")) from None
    keys = {
        name: int(value["keys"]) for name, value in info.items() if name.startswith("db") and isinstance(value, dict)
    }
    return CacheStats(
        environment=env.name,
        used_memory=int(info["used_memory"]),
        used_memory_human=str(info["used_memory_human"]),
        used_memory_peak=int(info["used_memory_peak"]),
        maxmemory=int(info.get("maxmemory", 0)),
        fragmentation_ratio=float(info.get("mem_fragmentation_ratio", 0)),
        evicted_keys=int(info.get("evicted_keys", 0)),
        expired_keys=int(info.get("expired_keys", 0)),
        hits=int(info.get("keyspace_hits", 0)),
        misses=int(info.get("keyspace_misses", 0)),
        keys_per_db=keys,
    )


def clear_cache(
    env: Environment,
    *,
    pattern: str | None = None,
    flush_all: bool = False,
    log: Log | None = None,
    redact: Redactor | None = None,
) -> dict[str, Any]:
    """Remove the keys matching `pattern` (SCAN + UNLINK) from the environment's Redis database,
    or all of that database's keys with `flush_all`; returns how many were removed and how."""
    log = log or NullLog()
    redact = redact or Redactor.for_environment(env)
    if flush_all == bool(pattern):
        raise InputError("clear the cache with a key pattern, or with flush_all to remove every key (not both)")
    if pattern is not None and (not pattern.isprintable() or len(pattern) > 200):
        raise InputError("the key pattern must be at most 200 printable characters")
    try:
        with _client(env) as client:
            if flush_all:
                before = int(client.dbsize())
                client.flushdb()
                log.warning(f"flushed the Redis database of {env.name}: {before} keys removed")
                return {"mode": "flush", "removed": before}
            removed = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=_BATCH):
                batch.append(key)
                if len(batch) >= _BATCH:
                    removed += int(client.unlink(*batch))
                    batch.clear()
            if batch:
                removed += int(client.unlink(*batch))
    except redis.RedisError as exc:
        raise OperationError(redact(f"clearing the Redis cache of {env.name} failed: {exc}")) from None
    log.info(f"removed {removed} keys matching {pattern!r} from the Redis of {env.name}")
    return {"mode": "pattern", "pattern": pattern, "removed": removed}
