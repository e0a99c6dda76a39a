"""Railyard settings: everything that differs between machines comes from the environment.

Defaults are the embedded setup of `make demo`: SQLite under var/, an embedded Celery
broker (kombu's SQLAlchemy transport on a SQLite file), no server to install.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("RAILYARD_VAR_DIR") or BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", default=False)
# Development mode (make demo, make test): allows the built-in SECRET_KEY and a secrets key
# derived from it. Captured here because Django's test runner turns DEBUG off at run time.
RAILYARD_DEV = DEBUG or env_bool("RAILYARD_DEV", default=False)
_DEV_SECRET_KEY = "railyard-development-only-secret-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY") or _DEV_SECRET_KEY
if SECRET_KEY == _DEV_SECRET_KEY and not RAILYARD_DEV:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE), or RAILYARD_DEV=true for development."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_htmx",
    "portal.accounts",
    "pipelines",
    "scheduler",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
            "libraries": {"railyard": "portal.templatetags.railyard"},
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'railyard.sqlite3'}"
# Connections are kept (60 s by default) and checked before reuse: a worker or the scheduler
# then pays for a connection once, not once per task or tick.
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, scheduler and workers share one file: WAL lets readers run beside the writer,
    # the busy timeout makes a writer wait for the lock instead of failing, and
    # IMMEDIATE transactions take the write lock up front so two writers never deadlock.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
    # A file, not memory, so a real worker process in the end-to-end tests sees the test data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-railyard.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pipeline_list"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "portal.api.exceptions.exception_handler",
}

# --- secrets at rest -------------------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation). Without it a
# development key is derived from SECRET_KEY, which is refused when DEBUG is off.
RAILYARD_ENCRYPTION_KEYS = env_list("RAILYARD_ENCRYPTION_KEYS", [])

# --- scheduler and workers --------------------------------------------------------------
RAILYARD_TICK_SECONDS = float(env_str("RAILYARD_TICK_SECONDS") or 1.0)
RAILYARD_HEARTBEAT_SECONDS = float(env_str("RAILYARD_HEARTBEAT_SECONDS") or 5.0)
# A running task run whose heartbeat is older than this is considered lost and retried.
RAILYARD_LEASE_SECONDS = float(env_str("RAILYARD_LEASE_SECONDS") or 60.0)
# A task run left in `queued` this long (a lost broker message) is sent again.
RAILYARD_REQUEUE_SECONDS = float(env_str("RAILYARD_REQUEUE_SECONDS") or 300.0)
RAILYARD_DATA_DIR = Path(env_str("RAILYARD_DATA_DIR") or VAR_DIR / "data")

# --- celery ----------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}"
if CELERY_BROKER_URL.startswith("sqla+sqlite"):
    CELERY_BROKER_URL = CELERY_BROKER_URL.removeprefix("sqla+")
    CELERY_BROKER_TRANSPORT = "portal.broker:EmbeddedTransport"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "railyard": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO", "propagate": False},
    },
}
