"""Settings, read from the environment with embedded defaults.

Nothing set: SQLite in the project folder and the in-memory channel layer.
DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis for scaling out.
Every variable is listed in the README.
"""

from pathlib import Path

from chatsite import env

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = BASE_DIR / ".local"  # git-ignored: development secrets, the SQLite file

DEBUG = env.env_bool("DEBUG", True)
SECRET_KEY = env.secret("SECRET_KEY", debug=DEBUG, local_file=LOCAL_DIR / "secrets.json")
# Fernet keys for provider API keys at rest; comma-separated, the first encrypts
# and all decrypt, so keys can be rotated.
PROVIDER_KEYS_SECRET = env.secret(
    "PROVIDER_KEYS_SECRET", debug=DEBUG, local_file=LOCAL_DIR / "secrets.json"
)
if not DEBUG:
    env.require_strong_secrets("PROVIDER_KEYS_SECRET", PROVIDER_KEYS_SECRET)

ALLOWED_HOSTS = env.env_list("ALLOWED_HOSTS", [])
CSRF_TRUSTED_ORIGINS = env.env_origins("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",  # first, so runserver serves ASGI (websockets) too
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "providers",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "chatsite.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.database("DATABASE_URL", env.env_path("SQLITE_PATH") or LOCAL_DIR / "db.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CHANNEL_LAYERS = {"default": env.channel_layer("REDIS_URL")}
REDIS_POOL_SIZE = env.env_int("REDIS_POOL_SIZE", 20, minimum=2)  # per process, for publishing
# Without Redis there is one process: a streaming reply it is not running is an orphan.
SINGLE_PROCESS = not env.is_set("REDIS_URL")
CACHES = {"default": env.cache("REDIS_URL")}  # login throttling; shared when on Redis

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# open: anyone may sign up; approval: accounts wait for an admin; closed: no signups.
# The very first account on an empty site is always allowed and becomes the admin.
SIGNUP_POLICY = env.env_choice("SIGNUP_POLICY", "open", ("open", "approval", "closed"))

# Chat limits. Each is an environment variable of the same name (see README).
MAX_CONCURRENT_GENERATIONS = env.env_int("MAX_CONCURRENT_GENERATIONS", 2, minimum=1)
MAX_MESSAGE_CHARS = env.env_int("MAX_MESSAGE_CHARS", 32_000, minimum=100)
DEFAULT_CONTEXT_WINDOW = env.env_int("DEFAULT_CONTEXT_WINDOW", 4096, minimum=256)
DEFAULT_REPLY_RESERVE = env.env_int("DEFAULT_REPLY_RESERVE", 1024, minimum=16)
# Every reply is bounded (see the README's security section). The output limit
# sent upstream is the smallest of the conversation's setting, the model's
# maximum, the context left and the quota left; these hard caps cut whatever a
# backend sends past them.
MAX_REPLY_TOKENS = env.env_int("MAX_REPLY_TOKENS", 16_384, minimum=16)
MAX_REPLY_BYTES = env.env_int("MAX_REPLY_BYTES", 256 * 1024, minimum=1024)
# Websocket frames the server sends stay under this many bytes (daphne refuses
# to send a message over 1 MiB); longer replies go out in parts.
WS_FRAME_BYTES = 256 * 1024
# Open chat sockets one user may hold in one process (tabs, devices).
MAX_SOCKETS_PER_USER = env.env_int("MAX_SOCKETS_PER_USER", 20, minimum=1)
# How often each process re-checks the sessions and accounts behind its open
# sockets, so logout, password change, deactivation or a deleted session ends
# them within about this long, whichever process or shell made the change.
SOCKET_RECHECK_SECONDS = 0.5
# Prometheus metrics at /metrics, for requests that bring this bearer token; unset: off.
METRICS_TOKEN = env.secret_or_empty("METRICS_TOKEN")
# Import: largest file and most messages one imported conversation may have.
IMPORT_MAX_BYTES = env.env_int("IMPORT_MAX_BYTES", 5_000_000, minimum=1000)
IMPORT_MAX_MESSAGES = env.env_int("IMPORT_MAX_MESSAGES", 2000, minimum=1)
# Reverse proxies in front of daphne that append to X-Forwarded-For; the client
# address (for login throttling) is the entry this many places from the right.
TRUSTED_PROXY_COUNT = env.env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
# Streaming: the first token goes at once, later ones in batches this far apart;
# the growing text is saved at most this often.
STREAM_BATCH_SECONDS = 0.04
# ...unless more replies run than this many frames a second allow at that pace: then
# they share it (chat.live.pace). 1500 keeps 25 frames a second up to 60 replies.
# The budget is the machine's: the WORKERS processes behind one port (chatsite.serve)
# share its cores and Redis, so each takes its part. Measured with `make bench` on
# two processes and two cores, 750 each against 1500 each: added time to first
# token p99 +239/+571 ms against +424/+653 at 100/150 clients, CPU per token
# 0.191/0.140 ms against 0.217/0.167.
WORKERS = env.env_int("WORKERS", 1, minimum=1)
STREAM_FRAMES_PER_SECOND = max(
    1, env.env_int("STREAM_FRAMES_PER_SECOND", 1500, minimum=100) // WORKERS
)
MAX_TITLE_CALLS = env.env_int("MAX_TITLE_CALLS", 4, minimum=1)  # per process, at once
STREAM_SAVE_SECONDS = 1.0
# A streaming reply whose row has not been touched for this long lost its process
# (multi-process setups; jobs touch their row three times per period).
STREAM_STALE_SECONDS = env.env_int("STREAM_STALE_SECONDS", 30, minimum=3)
# Sockets re-join their groups this often, healing after a Redis restart.
SOCKET_REJOIN_SECONDS = env.env_int("SOCKET_REJOIN_SECONDS", 10, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic target, for a reverse proxy to serve; unset, WhiteNoise serves static/.
STATIC_ROOT = env.env_path("STATIC_ROOT")
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Production (DEBUG off): HTTPS only, behind a proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.env_bool("TRUST_X_FORWARDED_PROTO", True) else None
)
SECURE_SSL_REDIRECT = env.env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]  # probes talk plain HTTP
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env.env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env.env_bool("SECURE_HSTS_PRELOAD", False)
# Preloading is a promise to browsers that is hard to take back: opt in with
# SECURE_HSTS_PRELOAD=true rather than be nagged into it.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SESSION_COOKIE_HTTPONLY = True
SESSION_ENGINE = "chat.accounts.session_store"  # Django's database sessions, read faster
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # httpx logs every request line at INFO; upstream URLs are not news.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
    "root": {
        "handlers": ["console"],
        "level": env.env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
    },
}
