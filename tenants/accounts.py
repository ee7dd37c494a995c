"""Signing in: password check, a second step for two-factor sign-in, lockout after repeated
failures, every attempt logged.

Lockout: after `attempts` failed sign-ins for one e-mail within `minutes` (counted since the
last successful one), further attempts are refused, with the right password too, until the
window has passed. Each attempt is stored with time, IP and outcome.

Two-factor sign-in (`tenants.two_factor`): a right password of an account that uses it (or must)
is logged as `password_ok`, which neither signs in nor resets the failure count; the second step
(`second_step`) logs `success` / `recovery_code`, or `bad_code` / `replayed_code`, which count
as failures like a wrong password. A person who must use 2FA but has not enrolled yet signs in
by confirming the enrolment (`enrol_and_sign_in`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from core.db import db
from tenants import passwords, two_factor
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope
from tenants.models import LoginAttempt, PlatformLoginAttempt, PlatformUser, Tenant, User

FAILURES = ("bad_password", "unknown_user", "no_password", two_factor.BAD_CODE, two_factor.REPLAYED_CODE)
SUCCESSES = two_factor.ACCEPTED
PASSWORD_OK = "password_ok"


@dataclass(frozen=True)
class Lockout:
    attempts: int
    minutes: int


@dataclass(frozen=True)
class SignIn:
    account: User | PlatformUser | None
    outcome: str
    # After a right password of a 2FA account: "code" (type a code) or "enrol" (must enrol first).
    next_step: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in SUCCESSES

    @property
    def password_ok(self) -> bool:
        return self.outcome == PASSWORD_OK


def _now() -> datetime:
    return datetime.now(UTC)


def _is_locked(attempt_model, filters, lockout: Lockout) -> bool:
    since = _now() - timedelta(minutes=lockout.minutes)
    last_success = db.session.execute(
        sa.select(sa.func.max(attempt_model.created_at)).where(*filters, attempt_model.outcome.in_(SUCCESSES))
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
    next_step = _next_step(user, tenant) if outcome == "success" else None
    if next_step:
        outcome = PASSWORD_OK
    db.session.add(LoginAttempt(tenant_id=tenant.id, email=email[:254], ip=ip, outcome=outcome))
    if outcome == "success":
        user.last_login_at = _now()
    db.session.commit()
    return SignIn(user if outcome in ("success", PASSWORD_OK) else None, outcome, next_step)


def sign_in_platform_user(email: str, password: str, ip: str | None, lockout: Lockout) -> SignIn:
    """Check a sign-in on the platform host and log the attempt. Commits."""
    email = email.strip().lower()
    with platform_scope(db.session):
        user = db.session.execute(sa.select(PlatformUser).where(PlatformUser.email == email)).scalar_one_or_none()
        locked = _is_locked(PlatformLoginAttempt, (PlatformLoginAttempt.email == email,), lockout)
        outcome = _check(user, password, locked)
        next_step = _next_step(user, None) if outcome == "success" else None
        if next_step:
            outcome = PASSWORD_OK
        db.session.add(PlatformLoginAttempt(email=email[:254], ip=ip, outcome=outcome))
        if outcome == "success":
            user.last_login_at = _now()
        db.session.commit()
    return SignIn(user if outcome in ("success", PASSWORD_OK) else None, outcome, next_step)


def _next_step(account: User | PlatformUser, tenant: Tenant | None) -> str | None:
    if account.has_two_factor:
        return "code"
    if two_factor.is_required(account, tenant):
        return "enrol"
    return None


def _attempts_of(account: User | PlatformUser):
    """The attempt model, its filters for `account`'s e-mail and a maker of a logged attempt."""
    if account.scope == "platform":
        return (
            PlatformLoginAttempt,
            (PlatformLoginAttempt.email == account.email,),
            lambda outcome, ip: PlatformLoginAttempt(email=account.email, ip=ip, outcome=outcome),
        )
    return (
        LoginAttempt,
        (LoginAttempt.tenant_id == account.tenant_id, LoginAttempt.email == account.email),
        lambda outcome, ip: LoginAttempt(tenant_id=account.tenant_id, email=account.email, ip=ip, outcome=outcome),
    )


def second_step(account: User | PlatformUser, code: str, ip: str | None, lockout: Lockout) -> SignIn:
    """The code (or a recovery code) after a right password. Wrong and replayed codes count
    towards the lockout like wrong passwords. Logs the attempt. Commits."""
    model, filters, attempt = _attempts_of(account)
    if _is_locked(model, filters, lockout):
        outcome = "locked"
    elif not account.is_active:
        outcome = "inactive"
    else:
        outcome = two_factor.check_code(account, code)
    db.session.add(attempt(outcome, ip))
    if outcome in SUCCESSES:
        account.last_login_at = _now()
    db.session.commit()
    return SignIn(account if outcome in SUCCESSES else None, outcome)


def enrol_and_sign_in(
    account: User | PlatformUser, code: str, ip: str | None, lockout: Lockout
) -> tuple[SignIn, list[str]]:
    """The enrolment a person who must use 2FA completes right after their password: a right
    code switches 2FA on (audited) and signs in. Returns the sign-in and the recovery codes
    (empty unless it succeeded). Raises InvalidInput for a wrong code, logged as `bad_code`. Commits."""
    model, filters, attempt = _attempts_of(account)
    if _is_locked(model, filters, lockout) or not account.is_active:
        outcome = "locked" if account.is_active else "inactive"
        db.session.add(attempt(outcome, ip))
        db.session.commit()
        return SignIn(None, outcome), []
    actor = Actor(kind=_actor_kind(account), id=account.id, email=account.email, ip=ip)
    try:
        codes = two_factor.confirm_enrolment(account, code, actor, commit=False)
    except InvalidInput:
        db.session.add(attempt(two_factor.BAD_CODE, ip))  # counts towards the lockout like any wrong code
        db.session.commit()
        raise
    db.session.add(attempt("success", ip))
    account.last_login_at = _now()
    db.session.commit()
    return SignIn(account, "success"), codes


def _actor_kind(account: User | PlatformUser) -> str:
    return "platform" if account.scope == "platform" else "user"


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
