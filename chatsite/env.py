"""Read settings from the environment, failing loudly with the variable's name.

Every helper raises ImproperlyConfigured naming the offending variable, so a
typo in a deployment stops the process at start-up instead of misbehaving later.
"""

import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def secret_or_empty(name: str) -> str:
    return _raw(name) or ""


def is_set(name: str) -> bool:
    return bool(_raw(name))


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def env_path(name: str) -> Path | None:
    value = _raw(name)
    return Path(value) if value else None


def env_origins(name: str) -> list[str]:
    origins = env_list(name, [])
    for origin in origins:
        parsed = urlparse(origin)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ImproperlyConfigured(
                f"{name} entries must look like https://chat.example.com, not {origin!r}"
            )
    return origins


def database(name: str, sqlite_path: Path) -> dict:
    """DATABASE_URL (PostgreSQL) if set, else a local SQLite file tuned for concurrency."""
    url = _raw(name)
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": sqlite_path,
            # A file, not memory, so a server started by the tests shares it.
            "TEST": {"NAME": sqlite_path.with_name("test-" + sqlite_path.name)},
            "OPTIONS": {
                # WAL lets the generation jobs write while pages read; IMMEDIATE
                # avoids "database is locked" on read-then-write transactions.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql", "pgsql") or not parsed.path.strip("/"):
        raise ImproperlyConfigured(
            f"{name} must look like postgres://user:password@host:5432/dbname "
            f"(got a value with scheme {parsed.scheme or 'none'!r})"
        )
    try:
        config = dict(dj_database_url.parse(url, conn_max_age=0))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} could not be parsed: {exc}") from None
    # A pool per process: a request or a reply's save borrows a connection instead
    # of opening one (a PostgreSQL connection costs a process on the server).
    size = env_int("DB_POOL_SIZE", 20, minimum=4)
    from chatsite.postgres import base  # psycopg is needed only here

    # The pool tests a connection that sat idle before lending it (chatsite.postgres):
    # after a database restart or failover it hands out a live one.
    # It keeps one connection for each of the event loop's database threads (asyncio's
    # default executor): it grows one connection at a time, so a pool of 2 that met a
    # burst made the burst's first queries wait for each new connection in turn. One
    # process, 75 clients arriving over 2 s, three runs each against a pool of 2: added
    # time to first token p50 +140/+130/+145 ms against +171/+234/+141; p99 unchanged.
    threads = min(32, (os.cpu_count() or 1) + 4)
    pool = {
        "min_size": min(threads, size),
        "max_size": size,
        "timeout": 5,
        "reset": base.note_return,
    }
    config["ENGINE"] = "chatsite.postgres"
    config["OPTIONS"] = {**config.get("OPTIONS", {}), "pool": pool}
    config["CONN_HEALTH_CHECKS"] = False  # Django's own check would test every loan
    return config


def channel_layer(name: str) -> dict:
    """Redis channel layer if REDIS_URL is set, else the in-process one."""
    url = _raw(name)
    if not url:
        return {
            "BACKEND": "chatsite.channel_layer.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000},
        }
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.hostname or parsed.path):
        raise ImproperlyConfigured(f"{name} must look like redis://host:6379/0, not {url!r}")
    return {"BACKEND": "chatsite.channel_layer.RedisPubSubChannelLayer", "CONFIG": {"hosts": [url]}}


def cache(name: str) -> dict:
    """Redis (same server as the channel layer) if REDIS_URL is set, else per process."""
    url = _raw(name)
    if not url:
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}


def secret(name: str, *, debug: bool, local_file: Path) -> str:
    """A secret from the environment; in development, generated once into a local file."""
    value = _raw(name)
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(
            f"{name} must be set when DEBUG is off. Make one with: {GENERATE_HINT}"
        )
    stored = json.loads(local_file.read_text()) if local_file.exists() else {}
    if name not in stored:
        stored[name] = secrets.token_urlsafe(48)
        local_file.parent.mkdir(parents=True, exist_ok=True)
        local_file.write_text(json.dumps(stored, indent=2))
        local_file.chmod(0o600)
    return stored[name]


MIN_SECRET_CHARS = 32
GENERATE_HINT = (
    'python3 -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


def require_strong_secrets(name: str, value: str):
    """Refuse a short, repetitive or placeholder secret (each, when comma-separated)."""
    for secret_value in [part.strip() for part in value.split(",")]:
        weak = (
            len(secret_value) < MIN_SECRET_CHARS
            or len(set(secret_value)) < 10
            or "change-me" in secret_value.lower()
        )
        if weak:
            raise ImproperlyConfigured(
                f"{name} is missing or weak: each secret needs at least {MIN_SECRET_CHARS} "
                f"random characters. Make one with: {GENERATE_HINT}"
            )
