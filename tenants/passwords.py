"""Password hashing with argon2id at OWASP's minimum parameters (19 MiB, 2 passes, 1 lane)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.i18n import gettext

MIN_LENGTH = 10
MAX_LENGTH = 256

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified against when the account does not exist, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password-only-for-timing")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_LENGTH:
        return gettext("Use at least %(limit)s characters.", limit=MIN_LENGTH)
    if len(password) > MAX_LENGTH:
        return gettext("Use at most %(limit)s characters.", limit=MAX_LENGTH)
    if password.strip() == "":
        return gettext("A password cannot be only spaces.")
    return None
