"""Merchant API keys: secret keys in Stripe's shape (`sk_test_…`, `sk_live_…`), one merchant each.

The full secret exists only in the answer to `create_key` / `roll_key`: the database keeps its
SHA-256 (to find the key again), its prefix and its last four characters (to show it masked),
never the secret; the audit log never sees the secret nor its hash. A secret has 40 random
url-safe characters (240 bits), so a plain, unsalted hash is enough: nobody can guess one, and
the lookup by hash inside the tenant means no secret is ever compared character by character.

Rolling a key issues a new secret with the same name and mode and lets the old one work until
its `expires_at` (now, or a few hours later, so that a deployment can switch over); revoking
ends a key at once. Use cases validate, audit (`tenants.audit.record`) and commit.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from core.db import db
from core.i18n import gettext
from tenants import audit
from tenants.errors import InvalidInput
from tenants.isolation import TenantOwned, tenant_context
from tenants.models import Merchant

MODES = ("test", "live")
PREFIXES = {"test": "sk_test_", "live": "sk_live_"}
RANDOM_CHARS = 40  # secrets.token_urlsafe(30) gives exactly 40 characters
SECRET_LENGTH = len("sk_test_") + RANDOM_CHARS
NAME_MAX = 100
MAX_ROLL_HOURS = 7 * 24
# `authenticate` writes `last_used_at` at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKey(TenantOwned, db.Model):
    """A merchant's secret API key, stored as its SHA-256 only; shown as `sk_test_…last4`."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    mode: Mapped[str] = mapped_column(sa.String(4))
    name: Mapped[str] = mapped_column(sa.String(NAME_MAX))
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    prefix: Mapped[str] = mapped_column(sa.String(8))
    last4: Mapped[str] = mapped_column(sa.String(4))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    # The user who created it (None for the system: CLI, demo data).
    created_by: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    # Set when the key is rolled: it keeps working until then.
    expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("mode IN ('test', 'live')", name="mode"),
        sa.CheckConstraint("prefix = 'sk_' || mode || '_'", name="prefix"),
        sa.CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash"),
        sa.CheckConstraint("char_length(last4) = 4", name="last4"),
        sa.UniqueConstraint("tenant_id", "key_hash"),
        sa.Index("ix_api_keys_tenant_id_merchant_id", "tenant_id", "merchant_id"),
    )

    @property
    def masked(self) -> str:
        """How the key is shown after its creation: `sk_test_…a1b2`."""
        return f"{self.prefix}…{self.last4}"

    def state(self, now: datetime | None = None) -> str:
        """'active', 'expiring' (rolled, still works), 'expired' or 'revoked'."""
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expired" if self.expires_at <= now else "expiring"
        return "active"

    def is_usable(self, now: datetime | None = None) -> bool:
        return self.state(now) in ("active", "expiring")


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret(mode: str) -> str:
    return PREFIXES[mode] + secrets.token_urlsafe(30)


def _merchant(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> Merchant:
    merchant = db.session.get(Merchant, (tenant_id, merchant_id))
    if merchant is None:
        raise InvalidInput(gettext("Unknown merchant."), "merchant_id")
    return merchant


def _check_live_allowed(merchant: Merchant, mode: str) -> None:
    """Live keys move real money, so only an active merchant whose KYC review approved it gets
    one (`Merchant.can_move_real_money`); test keys work from the first day of onboarding."""
    if mode != "live" or merchant.can_move_real_money:
        return
    if merchant.status != "active":
        raise InvalidInput(
            gettext("Live keys are not available while the merchant is suspended; use a test key."), "mode"
        )
    raise InvalidInput(
        gettext(
            "Live keys are available once your business is approved (onboarding status: %(status)s). "
            "Until then, use a test key.",
            status=merchant.onboarding_status.replace("_", " "),
        ),
        "mode",
    )


def _locked(key: ApiKey) -> ApiKey:
    """The session's row of `key`, re-read with FOR UPDATE: two rolls (or a roll and a revoke)
    of one key run one after the other, each on fresh state, even if `key` came from elsewhere."""
    row = db.session.get(ApiKey, (key.tenant_id, key.id), with_for_update=True, populate_existing=True)
    if row is None:
        raise InvalidInput(gettext("This key no longer exists."))
    return row


def _mirror(key: ApiKey, row: ApiKey, *names: str) -> None:
    """Show what a use case changed on `row` on the caller's object too, if it is another one."""
    if row is not key:
        for name in names:
            set_committed_value(key, name, getattr(row, name))


def _issue(tenant_id: uuid.UUID, merchant_id: uuid.UUID, mode: str, name: str, actor: audit.Actor):
    secret = _new_secret(mode)
    key = ApiKey(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        merchant_id=merchant_id,
        mode=mode,
        name=name,
        key_hash=hash_secret(secret),
        prefix=PREFIXES[mode],
        last4=secret[-4:],
        created_by=actor.id if actor.kind == "user" else None,
    )
    db.session.add(key)
    db.session.flush()
    return key, secret


def create_key(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, mode: str, name: str, actor: audit.Actor
) -> tuple[ApiKey, str]:
    """Issue a new secret key for a merchant. Returns the key and its secret, the only time the
    secret is available. Live keys only for an approved, active merchant (`_check_live_allowed`). Commits."""
    name = (name or "").strip()
    if mode not in MODES:
        raise InvalidInput(gettext("Choose test or live."), "mode")
    if not name:
        raise InvalidInput(gettext("Give the key a name, e.g. where it is used."), "name")
    if len(name) > NAME_MAX:
        raise InvalidInput(gettext("Use at most %(limit)s characters.", limit=NAME_MAX), "name")
    with tenant_context(db.session, tenant_id):
        _check_live_allowed(_merchant(tenant_id, merchant_id), mode)
        key, secret = _issue(tenant_id, merchant_id, mode, name, actor)
        audit.record(
            tenant_id,
            actor,
            "api_key.created",
            "api_key",
            key.id,
            audit.created(name=name, mode=mode, merchant_id=str(merchant_id), last4=key.last4),
        )
        db.session.commit()
    return key, secret


def roll_key(key: ApiKey, expires_in_hours: int, actor: audit.Actor) -> tuple[ApiKey, str]:
    """Replace `key` with a new secret (same merchant, name and mode); the old key keeps working
    for `expires_in_hours` (0: it stops now). Returns the new key and its secret. Commits."""
    if isinstance(expires_in_hours, bool) or not isinstance(expires_in_hours, int):
        raise InvalidInput(gettext("Choose when the old key stops working."), "expires_in")
    if not 0 <= expires_in_hours <= MAX_ROLL_HOURS:
        raise InvalidInput(
            gettext("The old key may keep working for at most %(limit)s hours.", limit=MAX_ROLL_HOURS),
            "expires_in",
        )
    with tenant_context(db.session, key.tenant_id):
        row = _locked(key)
        try:
            if row.revoked_at is not None:
                raise InvalidInput(gettext("This key is revoked; create a new one instead."), "expires_in")
            if row.expires_at is not None:
                raise InvalidInput(gettext("This key was already rolled; revoke it to end it now."), "expires_in")
            _check_live_allowed(_merchant(row.tenant_id, row.merchant_id), row.mode)
        except InvalidInput:
            db.session.rollback()  # releases the row lock
            raise
        new_key, secret = _issue(row.tenant_id, row.merchant_id, row.mode, row.name, actor)
        row.expires_at = utcnow() + timedelta(hours=expires_in_hours)
        audit.record(
            row.tenant_id,
            actor,
            "api_key.rolled",
            "api_key",
            row.id,
            {
                "expires_at": {"before": None, "after": row.expires_at.isoformat()},
                "replaced_by": {"after": str(new_key.id)},
            },
        )
        audit.record(
            row.tenant_id,
            actor,
            "api_key.created",
            "api_key",
            new_key.id,
            audit.created(
                name=new_key.name,
                mode=new_key.mode,
                merchant_id=str(new_key.merchant_id),
                last4=new_key.last4,
                rolled_from=str(row.id),
            ),
        )
        db.session.commit()
    _mirror(key, row, "expires_at")
    return new_key, secret


def revoke_key(key: ApiKey, actor: audit.Actor) -> bool:
    """Stop a key at once; returns whether anything changed (False if already revoked). Commits."""
    with tenant_context(db.session, key.tenant_id):
        row = _locked(key)
        if row.revoked_at is not None:
            _mirror(key, row, "revoked_at")
            db.session.rollback()  # releases the row lock
            return False
        row.revoked_at = utcnow()
        audit.record(
            row.tenant_id,
            actor,
            "api_key.revoked",
            "api_key",
            row.id,
            {"revoked_at": {"before": None, "after": row.revoked_at.isoformat()}, "last4": {"after": row.last4}},
        )
        db.session.commit()
    _mirror(key, row, "revoked_at")
    return True


def authenticate(tenant_id: uuid.UUID, raw_secret: str, *, now: datetime | None = None) -> ApiKey | None:
    """The usable key of `tenant_id` whose secret is `raw_secret`, else None.

    Looked up by the secret's hash within the tenant, so another tenant's secret finds nothing
    and no secret is compared in Python. Revoked and expired keys are refused, and so are live
    keys of a merchant that is not active and approved. `last_used_at` is written at most once a minute
    (then committed), so busy keys do not cost a write per request. `now` is for tests.
    """
    if not isinstance(raw_secret, str) or len(raw_secret) != SECRET_LENGTH:
        return None
    if not raw_secret.startswith(tuple(PREFIXES.values())):
        return None
    now = now or utcnow()
    with tenant_context(db.session, tenant_id):
        key = db.session.execute(
            sa.select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.key_hash == hash_secret(raw_secret))
        ).scalar_one_or_none()
        if key is None or not key.is_usable(now):
            return None
        if key.mode == "live":
            merchant = db.session.get(Merchant, (tenant_id, key.merchant_id))
            if merchant is None or not merchant.can_move_real_money:
                return None
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
            key.last_used_at = now
            db.session.commit()
    return key


def list_keys(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> list[ApiKey]:
    """A merchant's keys, newest first (revoked and expired ones included, to show their state)."""
    with tenant_context(db.session, tenant_id):
        return list(
            db.session.execute(
                sa.select(ApiKey)
                .where(ApiKey.tenant_id == tenant_id, ApiKey.merchant_id == merchant_id)
                .order_by(ApiKey.created_at.desc(), ApiKey.id)
            )
            .scalars()
            .all()
        )
