"""Two-factor sign-in: a TOTP authenticator (RFC 6238, `pyotp`) plus single-use recovery codes.

- Enrolment: `begin_enrolment` stores a new secret, encrypted (`core.crypto`), as pending; the
  person scans it into an authenticator and `confirm_enrolment` switches 2FA on once they type a
  right code. It returns the recovery codes, shown exactly once; only their argon2 hashes are kept.
- A code is accepted for the current 30 s step and one step either side (clock skew); a step
  once accepted is never accepted again (`totp_last_step`), nor any earlier one (replay).
- A recovery code works once: its hash is removed when used.
- Policy (`is_required`): platform admins always; a tenant's staff and its merchants' users when
  the tenant requires it (`set_requirement`, audited).
- Enrol, disable and new recovery codes are audited: a tenant user's in the tenant's audit log;
  a platform admin's (who belongs to no tenant) in the platform's sign-in log
  (`platform_login_attempts`, outcomes `2fa_*`), the platform's record of its own accounts.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

import pyotp
import sqlalchemy as sa
from pyotp.utils import strings_equal

from core import crypto
from core.db import db
from core.i18n import gettext
from tenants import audit, passwords
from tenants.errors import InvalidInput
from tenants.models import PlatformLoginAttempt, PlatformUser, Tenant, User

RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
RECOVERY_LENGTH = 10  # shown as xxxxx-xxxxx: about 49 bits each
SKEW_STEPS = 1  # accept the previous and the next 30 s step too (pyotp's valid_window=1)

# What `check_code` answers.
CODE_OK = "success"
RECOVERY_OK = "recovery_code"
BAD_CODE = "bad_code"
REPLAYED_CODE = "replayed_code"
ACCEPTED = (CODE_OK, RECOVERY_OK)

Account = User | PlatformUser
# A platform admin's 2FA changes, as outcomes in the platform's sign-in log.
PLATFORM_OUTCOMES = {
    "two_factor_enabled": "2fa_enabled",
    "two_factor_disabled": "2fa_disabled",
    "recovery_codes_renewed": "2fa_codes_renewed",
}


def _now() -> datetime:
    return datetime.now(UTC)


def is_required(account: Account, tenant: Tenant | None) -> bool:
    """Must this person use two-factor sign-in? Platform admins always; tenant users as their tenant says."""
    if account.scope == "platform":
        return True
    if tenant is None:
        return False
    return tenant.require_2fa_merchants if account.is_merchant_user else tenant.require_2fa_staff


def secret_of(account: Account) -> str | None:
    return crypto.decrypt(account.totp_secret) if account.totp_secret else None


def begin_enrolment(account: Account) -> str:
    """The pending secret of `account` (a new one the first time). Commits when it creates one."""
    if account.has_two_factor:
        raise InvalidInput(gettext("Two-factor sign-in is already on."))
    secret = secret_of(account)
    if secret is None:
        secret = pyotp.random_base32()
        account.totp_secret = crypto.encrypt(secret)
        db.session.commit()
    return secret


def provisioning_uri(account: Account, secret: str, issuer: str) -> str:
    """The otpauth:// address an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=issuer)


def _digits(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "")


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (of now-1, now, now+1) whose code is `code`, or None."""
    code = _digits(code)
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        if strings_equal(code, totp.generate_otp(step)):
            return step
    return None


def _normal_recovery(code: str) -> str:
    return _digits(code).lower()


def _use_recovery_code(account: Account, code: str) -> bool:
    candidate = _normal_recovery(code)
    if len(candidate) != RECOVERY_LENGTH or any(c not in RECOVERY_ALPHABET for c in candidate):
        return False
    hashes = list(account.recovery_code_hashes or [])
    for hashed in hashes:
        if passwords.verify_password(hashed, candidate):
            hashes.remove(hashed)
            account.recovery_code_hashes = hashes  # a new list: the JSON column sees the change
            return True
    return False


def _lock(account: Account) -> None:
    """Lock the account's row (until the transaction ends) and read its 2FA columns afresh."""
    model = PlatformUser if account.scope == "platform" else User
    db.session.execute(sa.select(model.id).where(model.id == account.id).with_for_update())
    db.session.refresh(account, ["totp_secret", "totp_enabled_at", "totp_last_step", "recovery_code_hashes"])


def check_code(account: Account, code: str, allow_recovery: bool = True, now: datetime | None = None) -> str:
    """Check a code of an enrolled account: CODE_OK, RECOVERY_OK, BAD_CODE or REPLAYED_CODE.

    An accepted code is used up (its step remembered, a recovery code's hash removed); the
    caller commits. The account's row stays locked until then, so two requests with one code
    cannot both pass."""
    _lock(account)
    secret = secret_of(account)
    if secret is None or not account.has_two_factor:
        return BAD_CODE
    step = _matching_step(secret, code, now or _now())
    if step is not None:
        if account.totp_last_step is not None and step <= account.totp_last_step:
            return REPLAYED_CODE
        account.totp_last_step = step
        return CODE_OK
    if allow_recovery and _use_recovery_code(account, code):
        return RECOVERY_OK
    return BAD_CODE


def _new_recovery_codes(account: Account) -> list[str]:
    codes = ["".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH)) for _ in range(RECOVERY_CODES)]
    account.recovery_code_hashes = [passwords.hash_password(code) for code in codes]
    return [f"{code[:5]}-{code[5:]}" for code in codes]


def _audit(account: Account, actor: audit.Actor, action: str, change_set: dict) -> None:
    if account.scope == "tenant":
        audit.record(account.tenant_id, actor, f"user.{action}", "user", account.id, change_set)
    else:
        db.session.add(PlatformLoginAttempt(email=account.email, ip=actor.ip, outcome=PLATFORM_OUTCOMES[action]))


def _code_problem(outcome: str) -> str:
    if outcome == REPLAYED_CODE:
        return gettext("That code was used already. Wait for the next one and type it.")
    return gettext("That code is not right. Type the 6-digit code your authenticator app shows now.")


def confirm_enrolment(account: Account, code: str, actor: audit.Actor, commit: bool = True) -> list[str]:
    """Switch two-factor sign-in on with a right code from the pending secret. Audited.

    Returns the new recovery codes (the only time they exist in clear). Raises InvalidInput
    (field `code`) for a wrong code, nothing changed."""
    if account.has_two_factor:
        raise InvalidInput(gettext("Two-factor sign-in is already on."))
    secret = secret_of(account)
    if secret is None:
        raise InvalidInput(gettext("Start the set-up again: no authenticator is waiting for a code."), "code")
    step = _matching_step(secret, code, _now())
    if step is None:
        raise InvalidInput(_code_problem(BAD_CODE), "code")
    account.totp_enabled_at = _now()
    account.totp_last_step = step
    codes = _new_recovery_codes(account)
    _audit(account, actor, "two_factor_enabled", audit.changes({"two_factor": False}, {"two_factor": True}))
    if commit:
        db.session.commit()
    return codes


def enrol_with_secret(account: Account, secret: str, actor: audit.Actor) -> list[str]:
    """Switch two-factor sign-in on with a given secret, no code typed: for operators setting up
    an account from the command line (the demo data's platform admin). Audited. Commits.
    Returns the new recovery codes."""
    pyotp.TOTP(secret).now()  # refuses a secret that is not base32
    account.totp_secret = crypto.encrypt(secret)
    account.totp_enabled_at = _now()
    account.totp_last_step = None
    codes = _new_recovery_codes(account)
    _audit(account, actor, "two_factor_enabled", audit.changes({"two_factor": False}, {"two_factor": True}))
    db.session.commit()
    return codes


def disable(account: Account, password: str, code: str, actor: audit.Actor, required: bool) -> None:
    """Switch two-factor sign-in off: needs the password and a code (or a recovery code). Audited.
    Refused when the person is required to use it. Commits."""
    if required:
        raise InvalidInput(gettext("Two-factor sign-in is required for your account; it cannot be switched off."))
    if not account.has_two_factor:
        raise InvalidInput(gettext("Two-factor sign-in is already off."))
    if not passwords.verify_password(account.password_hash, password or ""):
        raise InvalidInput(gettext("The password is not correct."), "password")
    outcome = check_code(account, code)
    if outcome not in ACCEPTED:
        raise InvalidInput(_code_problem(outcome), "code")
    account.totp_secret = None
    account.totp_enabled_at = None
    account.totp_last_step = None
    account.recovery_code_hashes = []
    _audit(account, actor, "two_factor_disabled", audit.changes({"two_factor": True}, {"two_factor": False}))
    db.session.commit()


def regenerate_recovery_codes(account: Account, code: str, actor: audit.Actor) -> list[str]:
    """New recovery codes (the old ones stop working), confirmed with an authenticator code. Audited. Commits."""
    if not account.has_two_factor:
        raise InvalidInput(gettext("Two-factor sign-in is off."))
    outcome = check_code(account, code, allow_recovery=False)
    if outcome != CODE_OK:
        raise InvalidInput(_code_problem(outcome), "code")
    codes = _new_recovery_codes(account)
    _audit(account, actor, "recovery_codes_renewed", {})
    db.session.commit()
    return codes


def set_requirement(tenant: Tenant, staff: bool, merchants: bool, actor: audit.Actor) -> bool:
    """Whether the tenant's staff / its merchants' users must use two-factor sign-in. Audited.
    Commits. Returns whether anything changed."""
    before = {"require_2fa_staff": tenant.require_2fa_staff, "require_2fa_merchants": tenant.require_2fa_merchants}
    after = {"require_2fa_staff": bool(staff), "require_2fa_merchants": bool(merchants)}
    diff = audit.changes(before, after)
    if not diff:
        return False
    tenant.require_2fa_staff = bool(staff)
    tenant.require_2fa_merchants = bool(merchants)
    audit.record(tenant.id, actor, "tenant.two_factor_policy_changed", "tenant", tenant.id, diff)
    db.session.commit()
    return True
