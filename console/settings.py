"""Django settings, read from environment variables (see README "Configuration").

Embedded defaults (SQLite and a secret key of its own under ``var/``, in-memory channel layer)
need no setting at all; production sets ``DATABASE_URL`` (PostgreSQL), ``REDIS_URL``,
``CONSOLE_SECRET_KEY`` (several web processes must share one), ``CONSOLE_ALLOWED_HOSTS`` and,
over HTTPS, ``CONSOLE_HTTPS``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from console.env import (
    envbool,
    envchoice,
    envfloat,
    envint,
    envlist,
    envstr,
    envurlprefix,
    private_file,
    secret_key,
)
from engine_bridge.config import parse_engines

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state of the embedded defaults: SQLite files, the demo login, collected static files.
VAR_DIR = Path(envstr("CONSOLE_VAR_DIR", "") or BASE_DIR / "var").resolve()

DEBUG = envbool("CONSOLE_DEBUG", False)
DEFAULT_EXCEPTION_REPORTER_FILTER = "console.error_reports.EngineTokenFilter"
SECRET_KEY = secret_key(VAR_DIR)
ALLOWED_HOSTS = envlist("CONSOLE_ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CONSOLE_CSRF_TRUSTED_ORIGINS", "")
for _origin in CSRF_TRUSTED_ORIGINS:
    # Django's system check refuses one without a scheme, but daphne runs no checks: it would
    # start and refuse every sign-in from that origin as a CSRF failure.
    if "://" not in _origin:
        raise ImproperlyConfigured(
            f"CONSOLE_CSRF_TRUSTED_ORIGINS: {_origin!r} has no scheme "
            "(an origin is scheme and host, like https://tools.example.com)"
        )
# Served over HTTPS (directly or behind a TLS proxy): session and CSRF cookies only over HTTPS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("CONSOLE_HTTPS", False)
if envbool("CONSOLE_TRUST_X_FORWARDED_PROTO", False):  # only behind a proxy that sets it
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = envint("CONSOLE_HSTS_SECONDS", 0, minimum=0)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_htmx",
    "channels",
    "workflows_ui",
    "engine_bridge",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything that reads the database (sessions): a 503 naming `migrate`, not a 500.
    "console.middleware.MigratedDatabaseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login; the REST API opts out and answers 401/403 itself (token auth).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "console.middleware.ResponseHeadersMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

# Django's model backend, handing the database connection back while a password is hashed.
# Django's own stays listed for the sessions it signed in (a session names its backend, and
# one not listed is signed out); the console's, having checked a password, ends the sign-in,
# so it is never hashed twice.
AUTHENTICATION_BACKENDS = [
    "console.signin.ModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"

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

#: Bytes SQLite's WAL file is cut back to after a checkpoint (see the SQLite options below).
SQLITE_WAL_LIMIT = 8 * 1024 * 1024

_DATABASE_URL = envstr("DATABASE_URL", "") or f"sqlite:///{VAR_DIR / 'console.sqlite3'}"
_DATABASE_HELP = "sqlite:///path or postgres://user:password@host:port/name"
# Checked before dj-database-url reads it: its own error for an unknown scheme lists every
# database it knows, most of which the console does not run on.
# The value itself is not quoted: without its scheme it may be user:password@host. Nor is
# what comes before a "://" unless it could be a scheme (a letter, then letters, digits, + - .):
# in user:password@host/db?sslrootcert=file:///ca.pem it is the password.
_DATABASE_SCHEME, _, _ = _DATABASE_URL.partition("://")
if "://" not in _DATABASE_URL or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", _DATABASE_SCHEME):
    raise ImproperlyConfigured(f"DATABASE_URL has no scheme ({_DATABASE_HELP})")
if _DATABASE_SCHEME.lower() not in ("sqlite", "postgres", "postgresql", "pgsql"):
    raise ImproperlyConfigured(
        f"DATABASE_URL: {_DATABASE_SCHEME!r} is not a database the console supports "
        f"({_DATABASE_HELP})"
    )
try:
    DATABASES = {
        "default": dj_database_url.parse(
            _DATABASE_URL, conn_max_age=envint("CONSOLE_DB_CONN_MAX_AGE", 60, minimum=0)
        )
    }
except ValueError as exc:  # dj_database_url's UnknownSchemeError among them
    raise ImproperlyConfigured(f"DATABASE_URL: {exc}") from None
if DATABASES["default"]["ENGINE"] not in (
    "django.db.backends.sqlite3",
    "django.db.backends.postgresql",
):
    raise ImproperlyConfigured(
        f"DATABASE_URL: {DATABASES['default']['ENGINE']} is not supported ({_DATABASE_HELP})"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The indexer writes while daphne reads: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions take the write lock up front instead of failing on upgrade. A big
    # transaction (a retention batch, a long history) grows the WAL file, which SQLite otherwise
    # keeps at that size until the last connection closes: the limit cuts it back at the next
    # checkpoint (about 4 MB of pages by default).
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            f"PRAGMA journal_size_limit={SQLITE_WAL_LIMIT};"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        private_file(Path(DATABASES["default"]["NAME"]))
else:
    # A connection kept from one pass of the indexer to the next (CONN_MAX_AGE) that a
    # PostgreSQL restart or failover broke meanwhile is replaced before the pass uses it (an
    # empty query first), instead of failing the pass with a "database error" in the log.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Most PostgreSQL connections each web process (daphne) holds, in a pool its requests share
# (see console/asgi.py); 0: no pool, a new connection for each request.
CONSOLE_DB_POOL_MAX = envint("CONSOLE_DB_POOL_MAX", 10, minimum=0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
# daphne serves the static files itself (from the source tree, no collectstatic needed), so the
# console works as started; 0 when a web server in front serves `collectstatic`'s STATIC_ROOT.
CONSOLE_SERVE_STATIC = envbool("CONSOLE_SERVE_STATIC", True)

# The path the console is reached under behind a proxy (``/dapr``), "" at the root of its host.
# A proxy may pass the path on as it is or take the prefix off (console.prefix.UnderPrefix
# serves both); every link, redirect and static URL carries it (Django's script prefix), and the
# session and CSRF cookies are sent to the console's paths only.
CONSOLE_TOP_PATHS = ("admin", "api", "favicon.ico", "instances", "login", "logout", "static")
CONSOLE_URL_PREFIX = envurlprefix("CONSOLE_URL_PREFIX", reserved=CONSOLE_TOP_PATHS)
if CONSOLE_URL_PREFIX:
    FORCE_SCRIPT_NAME = CONSOLE_URL_PREFIX
    SESSION_COOKIE_PATH = CSRF_COOKIE_PATH = CONSOLE_URL_PREFIX
    # Written whole: Django adds the script prefix to a relative one as of its first read, which
    # may come before any request set the prefix.
    STATIC_URL = f"{CONSOLE_URL_PREFIX}/static/"

# No inline script or style anywhere (htmx's own indicator style is turned off in base.html).
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)

REDIS_URL = envstr("REDIS_URL", "")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        "REDIS_URL: expected redis://host:port[/db], rediss://... or unix:///path"
    )
CHANNEL_LAYERS = {
    "default": (
        {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
        if REDIS_URL
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}

# Shared by every web process when there is a Redis (the sign-in limits count there: in each
# process's memory, several processes would each allow the limit).
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "console",
            # A Redis gone quiet must not hold a sign-in for long (see console/signin.py).
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
        if REDIS_URL
        else {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            # The sign-in limits' counts (console/signin.py): at the default 300, counts made
            # by a spray of addresses and usernames pushed out the ones that refuse a guesser.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    )
}

REST_FRAMEWORK = {
    # Token first: a request without credentials is answered 401 with "WWW-Authenticate: Token"
    # (DRF takes the challenge from the first class; the session one has none, hence a 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # An unknown ?format= answers 400 naming it, not DRF's 404.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "workflows_ui.api.negotiation.FormatNegotiation",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Dapr Workflow Console API",
    # What no GET operation can say: the answers to the methods the API has no operation for.
    "DESCRIPTION": "Read-only view of the workflow instances indexed from each engine. Every "
    "signed-in user that is active reads all of it (no other permission). Each path answers GET "
    "(and HEAD, OPTIONS) only: another method is answered 405, with an Allow header and "
    '{"detail": "..."}; with a session cookie and no CSRF token, 403 {"detail": "CSRF '
    'Failed: ..."} instead.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The schema's paths are the API's own (/api/...): under a prefix, its server says where.
    "SERVERS": [{"url": CONSOLE_URL_PREFIX}] if CONSOLE_URL_PREFIX else [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "workflows_ui.api.schema.empty_query_values_allowed",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "console.logfilters.OneLine",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    },
    "filters": {
        "database_down": {"()": "console.logfilters.DatabaseDown"},
        "once_a_minute": {"()": "console.logfilters.OnceAMinute"},
        "suspicious_request": {"()": "console.logfilters.SuspiciousRequest"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            # A request refused as suspicious (a Host not allowed): a line, not a traceback.
            "filters": ["suspicious_request"],
        }
    },
    "root": {
        "handlers": ["console"],
        "level": envchoice(
            "CONSOLE_LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
        ),
    },
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # A database down: a line a minute, not a traceback a request.
        "django.request": {"filters": ["database_down"]},
        # The web processes' pool warns at each failed attempt to connect (console/dbpool.py).
        "psycopg.pool": {"filters": ["once_a_minute"]},
    },
}

# Engines (see engine_bridge.config): a malformed value stops start-up here.
CONSOLE_ENGINES = parse_engines(os.environ)
# Deadline of every engine call, in seconds.
CONSOLE_ENGINE_TIMEOUT = envfloat("CONSOLE_ENGINE_TIMEOUT", 10.0, minimum=0.1)

# Payloads (input, output, custom status, failure, event details) are stored up to this many
# characters each; the original size is kept beside them.
CONSOLE_PAYLOAD_LIMIT = envint("CONSOLE_PAYLOAD_LIMIT", 65536, minimum=256)

# Indexer tuning (engine_bridge.indexer).
CONSOLE_INDEXER_CONCURRENCY = envint("CONSOLE_INDEXER_CONCURRENCY", 16, minimum=1)
CONSOLE_INDEXER_BATCH = envint("CONSOLE_INDEXER_BATCH", 1000, minimum=1)
CONSOLE_INDEXER_LIST_PAGE_SIZE = envint("CONSOLE_INDEXER_LIST_PAGE_SIZE", 1000, minimum=1)
CONSOLE_INDEXER_LIST_PAGES_PER_PASS = envint("CONSOLE_INDEXER_LIST_PAGES_PER_PASS", 20, minimum=1)
# Non-terminal instances are re-read after this many seconds, backing off to the maximum while
# they don't change; terminal ones (which can only be restarted, re-run or purged) a minute after
# they end, then twice as long each time up to an hour (on an engine with many of them: see
# CONSOLE_INDEXER_TERMINAL_READ_RATE).
CONSOLE_INDEXER_ACTIVE_INTERVAL = envfloat("CONSOLE_INDEXER_ACTIVE_INTERVAL", 1.0, minimum=0.0)
CONSOLE_INDEXER_ACTIVE_MAX_INTERVAL = envfloat(
    "CONSOLE_INDEXER_ACTIVE_MAX_INTERVAL", 15.0, minimum=0.0
)
# How many non-terminal instances that don't change are re-read a second, at most: on an engine
# with more of them than that rate reads in the maximum above, their re-reads are spread over as
# long as it takes (up to CONSOLE_INDEXER_TERMINAL_INTERVAL; 0: the maximum above always).
CONSOLE_INDEXER_ACTIVE_READ_RATE = envfloat("CONSOLE_INDEXER_ACTIVE_READ_RATE", 100.0, minimum=0.0)
CONSOLE_INDEXER_TERMINAL_FIRST_INTERVAL = envfloat(
    "CONSOLE_INDEXER_TERMINAL_FIRST_INTERVAL", 60.0, minimum=0.0
)
CONSOLE_INDEXER_TERMINAL_INTERVAL = envfloat(
    "CONSOLE_INDEXER_TERMINAL_INTERVAL", 3600.0, minimum=0.0
)
# How many finished instances of an engine are re-read a second, about: their re-reads are spread
# over as long as that takes, between the two intervals above (0: the maximum always).
CONSOLE_INDEXER_TERMINAL_READ_RATE = envfloat(
    "CONSOLE_INDEXER_TERMINAL_READ_RATE", 20.0, minimum=0.0
)
if CONSOLE_INDEXER_ACTIVE_INTERVAL > CONSOLE_INDEXER_ACTIVE_MAX_INTERVAL:
    raise ImproperlyConfigured(
        "CONSOLE_INDEXER_ACTIVE_INTERVAL must not be more than CONSOLE_INDEXER_ACTIVE_MAX_INTERVAL"
    )
if CONSOLE_INDEXER_TERMINAL_FIRST_INTERVAL > CONSOLE_INDEXER_TERMINAL_INTERVAL:
    raise ImproperlyConfigured(
        "CONSOLE_INDEXER_TERMINAL_FIRST_INTERVAL must not be more than "
        "CONSOLE_INDEXER_TERMINAL_INTERVAL"
    )
# Days the console keeps what its engine no longer has: purged instances (tombstones) and the
# earlier runs of an instance (continue-as-new, restarts), counted from when the indexer saw them
# go. 0 keeps them for good (the database then grows with every run ever seen).
CONSOLE_RETENTION_DAYS = envfloat("CONSOLE_RETENTION_DAYS", 30.0, minimum=0.0)
if CONSOLE_RETENTION_DAYS > 36500:
    # Its cutoff (now less that many days) and a tombstone's "kept until" must be dates: a
    # million days failed every pass of the indexer, and the page of each tombstone.
    raise ImproperlyConfigured(
        "CONSOLE_RETENTION_DAYS must not be more than 36500 (a century; 0 keeps for good)"
    )
# Seconds the indexer idles between passes that found nothing to do.
CONSOLE_INDEXER_IDLE_SLEEP = envfloat("CONSOLE_INDEXER_IDLE_SLEEP", 1.0, minimum=0.0)
# Seconds without a heartbeat of its runindexer (renewed every sixth of it, every 10 s at most)
# before an engine is said stale: no indexer runs for it (workflows_ui.models.
# indexer_unseen_limit). Read by the pages and by runindexer alike: set it the same for both.
CONSOLE_INDEXER_STALE_AFTER = envfloat("CONSOLE_INDEXER_STALE_AFTER", 60.0, minimum=1.0)
