"""Configuration: safe development defaults, refusals in production."""

import pytest
from cryptography.fernet import Fernet

from core import crypto
from payments import webhooks
from portal import config, create_app


@pytest.fixture(autouse=True)
def _session_settings_kept():
    """`create_app` configures process-wide settings (the encryption keys, whether webhooks may go to
    private addresses): a production app made here must not leave its own to the session's app."""
    keys, allow_private = crypto.configured_keys(), webhooks._allow_private_destinations
    yield
    if keys:
        crypto.configure(keys)
    webhooks.configure(allow_private=allow_private)


def test_production_refuses_the_development_secret_key(monkeypatch):
    monkeypatch.delenv("PAYPLAT_SECRET_KEY", raising=False)
    with pytest.raises(config.ConfigError, match="development secret key"):
        create_app({"ENV": "production", "DATABASE_URL": "postgresql://owner@db.example.com/pay"})


def test_production_starts_with_a_real_secret_and_secure_cookies(monkeypatch):
    monkeypatch.setenv("PAYPLAT_SECRET_KEY", "x" * 48)
    monkeypatch.setenv("PAYPLAT_ENV", "production")
    monkeypatch.setenv("PAYPLAT_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    app = create_app({"DATABASE_URL": "postgresql://owner@db.example.com/pay"})
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert app.config["PREFERRED_URL_SCHEME"] == "https"


def test_missing_database_url_names_the_setting(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(config.ConfigError, match="DATABASE_URL is not set"):
        config.load({})


def test_app_connects_as_the_unprivileged_role_of_the_owner_url():
    loaded = config.load({"DATABASE_URL": "postgres://owner:pw@db.example.com:5433/pay"})
    assert loaded["DATABASE_URL"] == "postgresql+psycopg://owner:pw@db.example.com:5433/pay"
    assert loaded["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://payplat_app@db.example.com:5433/pay"


def test_bad_number_setting_is_reported(monkeypatch):
    monkeypatch.setenv("PAYPLAT_LOGIN_LOCKOUT_ATTEMPTS", "five")
    with pytest.raises(config.ConfigError, match="PAYPLAT_LOGIN_LOCKOUT_ATTEMPTS"):
        config.load({"DATABASE_URL": "postgresql://owner@db.example.com/pay"})


def test_production_needs_its_own_encryption_key(monkeypatch):
    monkeypatch.setenv("PAYPLAT_SECRET_KEY", "x" * 48)
    monkeypatch.delenv("PAYPLAT_ENCRYPTION_KEYS", raising=False)
    with pytest.raises(config.ConfigError, match="PAYPLAT_ENCRYPTION_KEYS is not set"):
        config.load({"ENV": "production", "DATABASE_URL": "postgresql://owner@db.example.com/pay"})


def test_production_refuses_to_log_e_mails(monkeypatch):
    monkeypatch.setenv("PAYPLAT_SECRET_KEY", "x" * 48)
    monkeypatch.setenv("PAYPLAT_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("PAYPLAT_MAIL_BACKEND", "console")
    with pytest.raises(config.ConfigError, match="PAYPLAT_MAIL_BACKEND=console writes every e-mail"):
        config.load({"ENV": "production", "DATABASE_URL": "postgresql://owner@db.example.com/pay"})
