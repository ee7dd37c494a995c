"""Settings from the environment.

`DATABASE_URL` and `REDIS_URL` keep their conventional names; every other setting is
`PAYPLAT_<NAME>`. Development gets safe defaults; production refuses to start with the
development secret key or without a database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"
PREFIX = "PAYPLAT_"


class ConfigError(RuntimeError):
    """A setting is missing or unsafe; the message says which and how to fix it."""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(PREFIX + name, default)


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    value = _env(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name}={value!r} is not a whole number") from exc


# Rate limits (`portal.limits`), in the notation of the `limits` library ("10/minute", several
# separated by ";"), each overridable by `PAYPLAT_RATELIMIT_<NAME>`: sign-in forms per client IP
# (the password step and any later step of signing in, such as a one-time code) and per account
# e-mail, password reset requests, sign-ups, the merchant API per key (Stripe allows 100 requests a
# second) and per client IP for requests without a valid key.
RATE_LIMITS = {
    "SIGN_IN_IP": "10/minute",
    "SIGN_IN_EMAIL": "5/minute",
    "PASSWORD_RESET_IP": "5/minute",
    "PASSWORD_RESET_EMAIL": "3/hour",
    "SIGNUP_IP": "5/minute;30/hour",
    "API_KEY": "100/second",
    "API_IP": "20/second;300/minute",
}


def _check_rate_limits(limits: dict[str, str]) -> None:
    from limits import parse_many

    for name in RATE_LIMITS:
        value = limits.get(name)
        try:
            parse_many(value or "")
        except ValueError:
            raise ConfigError(
                f"{PREFIX}RATELIMIT_{name}={value!r} is not a rate limit: write e.g. '10/minute' or '5/minute;30/hour'"
            ) from None


def sqlalchemy_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme the URL was written with."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def app_database_url(owner_url: str, role: str, password: str | None) -> str:
    """The app's own connection: the owner's server and database, as the unprivileged role."""
    owner = make_url(sqlalchemy_url(owner_url))
    url = URL.create(owner.drivername, role, password, owner.host, owner.port, owner.database, owner.query)
    return url.render_as_string(hide_password=False)


def load(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    overrides = overrides or {}
    env = overrides.get("ENV") or _env("ENV", "development")
    production = env == "production"

    database_url = overrides.get("DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not database_url:
        raise ConfigError(
            "DATABASE_URL is not set: `make run` starts an embedded PostgreSQL and sets it, "
            "or export DATABASE_URL=postgresql://owner@host:5432/dbname"
        )
    app_role = overrides.get("APP_DB_ROLE") or _env("APP_DB_ROLE", "payplat_app")
    app_url = overrides.get("APP_DATABASE_URL") or _env("APP_DATABASE_URL")
    if not app_url:
        app_url = app_database_url(database_url, app_role, _env("APP_DB_PASSWORD"))

    https = _env_bool("HTTPS", production)
    instance = Path(overrides.get("INSTANCE_DIR") or _env("INSTANCE_DIR", str(ROOT / "instance")))
    smtp_host = _env("SMTP_HOST")
    config: dict[str, Any] = {
        "ENV": env,
        "SECRET_KEY": _env("SECRET_KEY", DEV_SECRET_KEY),
        "DATABASE_URL": sqlalchemy_url(database_url),
        "APP_DB_ROLE": app_role,
        "SQLALCHEMY_DATABASE_URI": sqlalchemy_url(app_url),
        # Idle pooled connections are checked at checkout (`core.db.ping_idle_connections`).
        "DB_PING_IDLE_SECONDS": _env_int("DB_PING_IDLE_SECONDS", 2),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "INSTANCE_DIR": instance,
        "PLATFORM_DOMAIN": _env("PLATFORM_DOMAIN", "localhost"),
        "PLATFORM_HOST": _env("PLATFORM_HOST"),
        "PUBLIC_PORT": _env("PUBLIC_PORT", "" if production else os.environ.get("PORT", "5000")),
        "HTTPS": https,
        "PREFERRED_URL_SCHEME": "https" if https else "http",
        "PROXY_FIX": _env_bool("PROXY_FIX", production),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": https,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
        "LOGIN_LOCKOUT_ATTEMPTS": _env_int("LOGIN_LOCKOUT_ATTEMPTS", 5),
        "LOGIN_LOCKOUT_MINUTES": _env_int("LOGIN_LOCKOUT_MINUTES", 15),
        "PASSWORD_RESET_MAX_AGE": _env_int("PASSWORD_RESET_MAX_AGE", 3600),
        "INVITATION_MAX_AGE": _env_int("INVITATION_MAX_AGE", 7 * 24 * 3600),
        "SIGNUP_MAX_AGE": _env_int("SIGNUP_MAX_AGE", 2 * 24 * 3600),
        "MAIL_BACKEND": _env("MAIL_BACKEND", "smtp" if smtp_host else "file"),
        "MAIL_DIR": instance / "mail",
        "MAIL_SENDER_LOCALPART": _env("MAIL_SENDER_LOCALPART", "no-reply"),
        "SMTP_HOST": smtp_host,
        "SMTP_PORT": _env_int("SMTP_PORT", 587),
        "SMTP_USERNAME": _env("SMTP_USERNAME"),
        "SMTP_PASSWORD": _env("SMTP_PASSWORD"),
        "SMTP_STARTTLS": _env_bool("SMTP_STARTTLS", True),
        "UPLOAD_DIR": instance / "uploads",
        "LOGO_MAX_BYTES": _env_int("LOGO_MAX_BYTES", 512 * 1024),
        # A KYC document's upload raises the request limit for itself (`portal.merchant.onboarding`).
        "KYC_DOCUMENT_MAX_BYTES": _env_int("KYC_DOCUMENT_MAX_BYTES", 10 * 1024 * 1024),
        "MAX_CONTENT_LENGTH": _env_int("MAX_CONTENT_LENGTH", 4 * 1024 * 1024),
        "THEMES_DIR": ROOT / "themes",
        "PAGE_SIZE": _env_int("PAGE_SIZE", 25),
        # Exports: up to this many rows are downloaded at once; more become a job with a progress bar,
        # whose file can be downloaded for this many hours (then the sweep deletes it).
        "EXPORT_DIRECT_MAX_ROWS": _env_int("EXPORT_DIRECT_MAX_ROWS", 5000),
        "EXPORT_TTL_HOURS": _env_int("EXPORT_TTL_HOURS", 24),
        "ENCRYPTION_KEYS": [k for k in (_env("ENCRYPTION_KEYS") or "").split(",") if k.strip()],
        "RATE_LIMITS": {name: _env(f"RATELIMIT_{name}", default) for name, default in RATE_LIMITS.items()},
        # Where the counts live (the app's Redis unless set) and how they are counted; without Redis
        # each process counts in memory until Redis answers again (`portal.limits`).
        "RATELIMIT_STORAGE_URI": _env("RATELIMIT_STORAGE_URI"),
        "RATELIMIT_STRATEGY": _env("RATELIMIT_STRATEGY", "fixed-window"),
        # The security headers (`portal.security`): how long browsers keep to HTTPS once told over HTTPS.
        "HSTS_MAX_AGE": _env_int("HSTS_MAX_AGE", 365 * 24 * 3600),
    }
    config.update(overrides)
    config["DATABASE_URL"] = sqlalchemy_url(config["DATABASE_URL"])
    config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(
        config.get("APP_DATABASE_URL") or config["SQLALCHEMY_DATABASE_URI"]
    )
    if not config["PLATFORM_HOST"]:
        config["PLATFORM_HOST"] = config["PLATFORM_DOMAIN"]
    _check_rate_limits(config["RATE_LIMITS"])
    if config["ENV"] == "production" and config["SECRET_KEY"] == DEV_SECRET_KEY:
        raise ConfigError(
            "refusing to start in production with the development secret key: "
            "set PAYPLAT_SECRET_KEY to a long random value"
        )
    if len(config["SECRET_KEY"]) < 32 and config["ENV"] == "production":
        raise ConfigError("PAYPLAT_SECRET_KEY is too short: use at least 32 random characters")
    if config["ENV"] == "production" and config["MAIL_BACKEND"] == "console":
        raise ConfigError(
            "PAYPLAT_MAIL_BACKEND=console writes every e-mail, with its sign-in and password-reset links, "
            "to the log: use smtp in production"
        )
    if not config["ENCRYPTION_KEYS"]:
        if config["ENV"] == "production":
            raise ConfigError(
                "PAYPLAT_ENCRYPTION_KEYS is not set: production needs its own key for secrets at rest "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            )
        from core.crypto import derived_key

        config["ENCRYPTION_KEYS"] = [derived_key(config["SECRET_KEY"])]
    return config
