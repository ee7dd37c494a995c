"""Secrets at rest: channel credentials and webhook secrets are stored encrypted (Fernet:
AES-128-CBC + HMAC-SHA256, from `cryptography`).

Keys come from `PAYPLAT_ENCRYPTION_KEYS` (comma-separated Fernet keys, newest first): the first
encrypts, all decrypt, so a key can be rotated by putting a new one in front and re-encrypting.
Development derives a key from the secret key; production must set its own.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_box: MultiFernet | None = None


class SecretsNotConfigured(RuntimeError):
    pass


def derived_key(secret_key: str) -> str:
    """A Fernet key derived from the app's secret key (development only)."""
    digest = hashlib.sha256(b"payplat-secrets-v1|" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def configure(keys: list[str]) -> None:
    global _box
    if not keys:
        raise SecretsNotConfigured("no encryption key: set PAYPLAT_ENCRYPTION_KEYS")
    try:
        _box = MultiFernet([Fernet(key.strip().encode()) for key in keys])
    except ValueError as exc:
        raise SecretsNotConfigured(
            "PAYPLAT_ENCRYPTION_KEYS holds a value that is not a Fernet key: "
            "create one with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`"
        ) from exc


def _current() -> MultiFernet:
    if _box is None:
        raise SecretsNotConfigured("secrets are not configured: create the app first")
    return _box


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsNotConfigured("a stored secret cannot be decrypted with the configured keys") from exc


def mask(value: str, keep: int = 4) -> str:
    """'sk_test_51Habcdef0123' -> 'sk_test_…0123': enough to recognise, never enough to use."""
    if not value:
        return ""
    prefix = value[: value.rfind("_") + 1] if "_" in value[:12] else ""
    return f"{prefix}…{value[-keep:]}" if len(value) > keep + len(prefix) else "…"
