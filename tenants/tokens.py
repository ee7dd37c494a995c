"""Signed, expiring, single-use links for invitations and password resets.

The token signs the account's id and a fingerprint of its password state; setting a password
changes the fingerprint, so a used link stops working without any table of used tokens.
"""

from __future__ import annotations

import hashlib

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.i18n import gettext

PURPOSES = ("invitation", "password-reset", "signup")


class TokenError(ValueError):
    """The link is broken, expired, or already used; `reason` is shown to the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def fingerprint(account) -> str:
    state = f"{account.password_hash}|{account.password_changed_at}|{account.is_active}"
    return hashlib.sha256(state.encode()).hexdigest()[:32]


def _serializer(secret: str, purpose: str) -> URLSafeTimedSerializer:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return URLSafeTimedSerializer(secret, salt=f"payplat.{purpose}")


def make(secret: str, purpose: str, account) -> str:
    return _serializer(secret, purpose).dumps({"a": account.get_id(), "f": fingerprint(account)})


def account_id(secret: str, purpose: str, token: str, max_age: int) -> tuple[str, str]:
    """The (account id, fingerprint) signed into `token`, or TokenError."""
    try:
        payload = _serializer(secret, purpose).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise TokenError(gettext("This link has expired. Ask for a new one.")) from exc
    except BadSignature as exc:
        raise TokenError(gettext("This link is not valid.")) from exc
    return payload["a"], payload["f"]


def check_unused(account, signed_fingerprint: str) -> None:
    if account is None or fingerprint(account) != signed_fingerprint:
        raise TokenError(gettext("This link has already been used or is no longer valid."))
