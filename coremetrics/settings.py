"""Settings: everything comes from the environment (documented in docs/configuration.md)."""

import socket
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Signs sessions and visitor ids. Only a debug run may fall back to a development key;
# SECRET_KEY_FALLBACKS lets a rotated key keep recognising the ids it issued.
SECRET_KEY = env("SECRET_KEY", default="django-insecure-dev-key" if DEBUG else None)
if not SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for a development run).")
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATA_DIR = Path(env("COREMETRICS_DATA_DIR", default=str(BASE_DIR / "var")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_celery_beat",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "anymail",
    "coremetrics",
    "delivery",
    "aggregation",
    "segmentation",
    "campaigns",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "coremetrics.urls"
WSGI_APPLICATION = "coremetrics.wsgi.application"

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
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'coremetrics.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default is shared by the web server, the worker and beat: WAL lets readers
    # proceed while consolidation writes, and the timeout waits out a writer instead of failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis holds the published lookup tables, the Celery broker and the cache in production.
# Without it (the embedded default) tables live in files and Celery uses the filesystem broker.
REDIS_URL = env("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "cm",
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(DATA_DIR / "static")))

LOGIN_URL = "admin:login"

# Login protection (django-axes): after LOGIN_FAILURE_LIMIT failed logins for one username
# from one address, that pair is refused for LOGIN_LOCKOUT_MINUTES; a success resets it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "delivery.identity.request_client_address"
# Behind a proxy that sets X-Forwarded-For itself (nginx: `proxy_set_header X-Forwarded-For
# $remote_addr`), the browser's address is the header's last entry, not the connection's.
TRUST_X_FORWARDED_FOR = env.bool("TRUST_X_FORWARDED_FOR", default=False)

# HTTPS: on by default in production (DEBUG off): HTTPS redirect, secure cookies, HSTS.
# HTTPS=0 for a plain-HTTP install (and the test runs, which serve on http://127.0.0.1).
HTTPS = env.bool("HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
# Preloading is a promise to browser vendors that only the domain's owner can make.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Behind a proxy that ends TLS (nginx): trust its X-Forwarded-Proto header, and only then.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
}

# Celery. The beat schedule itself lives in the database (django-celery-beat), seeded by a
# migration, so that marketers' edits in the admin survive restarts.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# Tag and identity (D5, T2).
VISITOR_COOKIE_DAYS = env.int("VISITOR_COOKIE_DAYS", default=395)
SESSION_IDLE_MINUTES = env.int("SESSION_IDLE_MINUTES", default=30)
SESSION_MAX_HOURS = env.int("SESSION_MAX_HOURS", default=12)
# Where the tag sends its queries and events; empty means the host that served the tag.
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="")

# Delivery (D2): how often a node checks whether a newer table version was published.
DELIVERY_REFRESH_SECONDS = env.float("DELIVERY_REFRESH_SECONDS", default=1.0)
# This node's copy of the published tables (memory-mapped by its web processes, read back
# after a restart): a local disk, never a shared one.
DELIVERY_NODE_DIR = Path(env("DELIVERY_NODE_DIR", default=str(DATA_DIR / "node")))
# A MaxMind-format country database (GeoLite2-Country.mmdb or compatible) for the country
# condition of attachments (D3); empty: country conditions never hold.
GEOIP_PATH = env("GEOIP_PATH", default="")
# Named in every delivery answer's X-Coremetrics-Node header, to tell nodes apart.
NODE_NAME = env("NODE_NAME", default=socket.gethostname())
TABLE_STORE_DIR = Path(env("TABLE_STORE_DIR", default=str(DATA_DIR / "tables")))
TABLE_VERSIONS_KEPT = env.int("TABLE_VERSIONS_KEPT", default=5)

# Aggregation (A1-A3).
SPOOL_DIR = Path(env("SPOOL_DIR", default=str(DATA_DIR / "spool")))
SPOOL_ROTATE_SECONDS = env.int("SPOOL_ROTATE_SECONDS", default=60)
SPOOL_ROTATE_BYTES = env.int("SPOOL_ROTATE_BYTES", default=64 * 1024 * 1024)
ARCHIVE_KEEP_DAYS = env.int("ARCHIVE_KEEP_DAYS", default=30)
# Spool files a consolidation loads at once on PostgreSQL (each a thread and a connection).
CONSOLIDATION_WORKERS = env.int("CONSOLIDATION_WORKERS", default=2)
COLLECT_MAX_BYTES = env.int("COLLECT_MAX_BYTES", default=40 * 1024)
COLLECT_MAX_EVENTS = env.int("COLLECT_MAX_EVENTS", default=100)
# Events per second one client may send to one web process, and how many seconds of that rate
# a burst may use at once; beyond that collect answers 429 with Retry-After.
COLLECT_RATE_PER_SECOND = env.float("COLLECT_RATE_PER_SECOND", default=2000)
COLLECT_RATE_BURST_SECONDS = env.float("COLLECT_RATE_BURST_SECONDS", default=5)

# Email campaigns (C2). EMAIL_URL names the server: smtp://user:password@host:25,
# smtp+tls://...:587 or smtp+ssl://...:465; the embedded default (filemail://) writes each
# message to a file under EMAIL_FILE_PATH (DATA_DIR/mail). EMAIL_BACKEND overrides the
# backend, e.g. a django-anymail one ("anymail.backends.mailgun.EmailBackend") with its
# settings in ANYMAIL (JSON).
_email = env.email_url("EMAIL_URL", default="filemail://")
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
EMAIL_FILE_PATH = env("EMAIL_FILE_PATH", default=str(DATA_DIR / "mail"))
EMAIL_BACKEND = env("EMAIL_BACKEND", default=_email["EMAIL_BACKEND"])
ANYMAIL = env.json("ANYMAIL", default={})
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
# The tracking addresses in messages (pixel, links, unsubscribe) start with this.
EMAIL_BASE_URL = env("EMAIL_BASE_URL", default=PUBLIC_BASE_URL or "http://127.0.0.1:8000")
# A message claimed by a sender this long ago and never marked sent is taken as interrupted
# (its sender died): it is reported, never sent again (docs/email.md).
EMAIL_CLAIM_SECONDS = env.int("EMAIL_CLAIM_SECONDS", default=300)
# Machine opens and clicks (B3, docs/email.md): fetchers' networks, and how soon after sending
# and how close together activity is a machine's.
EMAIL_MACHINE_NETWORKS = env.list(
    "EMAIL_MACHINE_NETWORKS",
    default=["17.0.0.0/8", "40.92.0.0/15", "40.107.0.0/16", "52.100.0.0/14", "104.47.0.0/17"],
)
EMAIL_MACHINE_SOON_SECONDS = env.float("EMAIL_MACHINE_SOON_SECONDS", default=10)
EMAIL_MACHINE_BURST_SECONDS = env.float("EMAIL_MACHINE_BURST_SECONDS", default=2)

# The REST API (/api/v1): per-client tokens (coremetrics/tokens.py) or a console session.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "coremetrics.tokens.ClientTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "coremetrics.tokens.TokenScope",
        "coremetrics.permissions.ClientRole",
    ],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "coremetrics.filters.TenantFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "coremetrics API",
    "DESCRIPTION": "Campaigns, content, segments, lookup tables, A/B tests, profiles and events "
    "of one client (the API token's). docs/api.md.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The interactive docs are served from this server: no CDN, no network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "coremetrics.openapi.errors_document",
    ],
}
