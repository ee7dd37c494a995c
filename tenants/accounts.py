"""Signing in: password check, lockout after repeated failures, every attempt logged.

Lockout: after `attempts` failed sign-ins for one e-mail within `minutes` (counted since the
last successful one), further attempts are refused, with the right password too, until the
window has passed. Each attempt is stored with time, IP and outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.db import db
from tenants import passwords
from tenants.isolation import platform_scope
from tenants.models import LoginAttempt, PlatformLoginAttempt, PlatformUser, Tenant, User

FAILURES = ("bad_password", "unknown_user", "no_password")


@dataclass(frozen=True)
class Lockout:
    attempts: int
    minutes: int


@dataclass(frozen=True)
class SignIn:
    account: User | PlatformUser | None
    outcome: str

    @property
    def ok(self) -> bool:
        return self.outcome == "success"


def _now() -> datetime:
    return datetime.now(UTC)


def _is_locked(attempt_model, filters, lockout: Lockout) -> bool:
    since = _now() - timedelta(minutes=lockout.minutes)
    last_success = db.session.execute(
        sa.select(sa.func.max(attempt_model.created_at)).where(*filters, attempt_model.outcome == "success")
    ).scalar()
    if last_success is not None and last_success > since:
        since = last_success
    failures = db.session.execute(
        sa.select(sa.func.count())
        .select_from(attempt_model)
        .where(*filters, attempt_model.created_at > since, attempt_model.outcome.in_(FAILURES))
    ).scalar_one()
    return failures >= lockout.attempts


def _check(account, password: str, locked: bool) -> str:
    if locked:
        return "locked"
    if account is None:
        passwords.verify_password(None, password)  # same cost as a real check
        return "unknown_user"
    if not account.has_password:
        return "no_password"
    if not passwords.verify_password(account.password_hash, password):
        return "bad_password"
    if not account.is_active:
        return "inactive"
    return "success"


def sign_in_tenant_user(tenant: Tenant, email: str, password: str, ip: str | None, lockout: Lockout) -> SignIn:
    """Check a sign-in on `tenant`'s host and log the attempt. Commits."""
    email = email.strip().lower()
    user = db.session.execute(
        sa.select(User).where(User.tenant_id == tenant.id, User.email == email)
    ).scalar_one_or_none()
    locked = _is_locked(LoginAttempt, (LoginAttempt.tenant_id == tenant.id, LoginAttempt.email == email), lockout)
    outcome = "suspended" if not tenant.is_active else _check(user, password, locked)
    db.session.add(LoginAttempt(tenant_id=tenant.id, email=email[:254], ip=ip, outcome=outcome))
    if outcome == "success":
        user.last_login_at = _now()
    db.session.commit()
    return SignIn(user if outcome == "success" else None, outcome)


def sign_in_platform_user(email: str, password: str, ip: str | None, lockout: Lockout) -> SignIn:
    """Check a sign-in on the platform host and log the attempt. Commits."""
    email = email.strip().lower()
    with platform_scope(db.session):
        user = db.session.execute(sa.select(PlatformUser).where(PlatformUser.email == email)).scalar_one_or_none()
        locked = _is_locked(PlatformLoginAttempt, (PlatformLoginAttempt.email == email,), lockout)
        outcome = _check(user, password, locked)
        db.session.add(PlatformLoginAttempt(email=email[:254], ip=ip, outcome=outcome))
        if outcome == "success":
            user.last_login_at = _now()
        db.session.commit()
    return SignIn(user if outcome == "success" else None, outcome)


def set_password(account: User | PlatformUser, password: str) -> None:
    """Set a new password (validated by the caller with `passwords.password_problem`)."""
    account.password_hash = passwords.hash_password(password)
    account.password_changed_at = _now()


LOCALES = ("en", "zh")


def set_locale(account: User | PlatformUser, locale: str | None) -> None:
    """Remember the language a person chose for their account (None: follow the tenant's
    default). A preference, not an administrative act: not audited. Commits."""
    if locale is not None and locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}")
    if account.locale != locale:
        account.locale = locale
        db.session.commit()


def create_platform_admin(email: str, password: str, name: str = "") -> PlatformUser:
    """Create (or reset the password of) a platform admin. Commits."""
    email = email.strip().lower()
    with platform_scope(db.session):
        user = db.session.execute(sa.select(PlatformUser).where(PlatformUser.email == email)).scalar_one_or_none()
        if user is None:
            user = PlatformUser(email=email, name=name or email.split("@")[0])
            db.session.add(user)
        set_password(user, password)
        db.session.commit()
    return user
