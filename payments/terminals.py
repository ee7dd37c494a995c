"""A merchant's terminals: POS and face-pay devices that take payments through the merchant API
with a device key of their own (`dk_test_…`, `dk_live_…`).

A device key is stored as API keys are (`tenants.api_keys`): its SHA-256, prefix and last four
characters, never the secret, which exists only in the answer to `register` and `rotate_key`.
A key acts for its terminal's merchant in the terminal's mode, and only for what a device does:
create, confirm and retrieve its own PaymentIntents and refund them (the API refuses the rest).
Rotating replaces the key at once; a deactivated terminal's key stops working. Use cases
validate, audit (`tenants.audit.record`) and commit.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from core.db import db
from core.i18n import gettext
from payments import objects
from tenants import audit
from tenants.api_keys import hash_secret
from tenants.errors import InvalidInput
from tenants.isolation import TenantOwned, tenant_context
from tenants.models import Merchant

KINDS = {"pos": "POS", "face_pay": "Face-pay device"}
MODES = ("test", "live")
PREFIXES = {"test": "dk_test_", "live": "dk_live_"}
RANDOM_CHARS = 40  # secrets.token_urlsafe(30)
SECRET_LENGTH = len("dk_test_") + RANDOM_CHARS
NAME_MAX = 100
SERIAL_MAX = 64
LOCATION_MAX = 200
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Terminal(TenantOwned, db.Model):
    """A merchant's device (`tmr_…`) with its device key, stored as its SHA-256 only."""

    __tablename__ = "terminals"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    name: Mapped[str] = mapped_column(sa.String(NAME_MAX))
    kind: Mapped[str] = mapped_column(sa.String(10))
    serial_number: Mapped[str] = mapped_column(sa.String(SERIAL_MAX))
    location: Mapped[str | None] = mapped_column(sa.String(LOCATION_MAX))
    mode: Mapped[str] = mapped_column(sa.String(4))
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    key_last4: Mapped[str] = mapped_column(sa.String(4))
    status: Mapped[str] = mapped_column(sa.String(10), default="active")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    key_rotated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    deactivated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('pos', 'face_pay')", name="kind"),
        sa.CheckConstraint("mode IN ('test', 'live')", name="mode"),
        sa.CheckConstraint("status IN ('active', 'inactive')", name="status"),
        sa.CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash"),
        sa.UniqueConstraint("tenant_id", "key_hash"),
        sa.UniqueConstraint("tenant_id", "merchant_id", "serial_number"),
        sa.Index("ix_terminals_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"),
    )

    @property
    def masked_key(self) -> str:
        return f"{PREFIXES[self.mode]}…{self.key_last4}"

    @property
    def kind_label(self) -> str:
        return KINDS.get(self.kind, self.kind)

    @property
    def is_active(self) -> bool:
        return self.status == "active"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _new_secret(mode: str) -> str:
    return PREFIXES[mode] + secrets.token_urlsafe(30)


def _text(value: str | None, field: str, missing: str | None, max_length: int) -> str | None:
    """`missing` is the message for an empty value, None when the field is optional."""
    text = (value or "").strip()
    if missing is not None and not text:
        raise InvalidInput(missing, field)
    if len(text) > max_length:
        raise InvalidInput(gettext("Use at most %(max_length)s characters.", max_length=max_length), field)
    return text or None


def _merchant(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> Merchant:
    merchant = db.session.get(Merchant, (tenant_id, merchant_id))
    if merchant is None:
        raise InvalidInput(gettext("Unknown merchant."), "merchant_id")
    return merchant


def _check_live_allowed(merchant: Merchant, mode: str) -> None:
    # As for API keys: a device takes real money only for an approved (active) merchant.
    if mode == "live" and merchant.status != "active":
        raise InvalidInput(
            gettext("Live terminals are available once the merchant is approved; use test mode."), "mode"
        )


def register(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    *,
    name: str,
    kind: str,
    serial_number: str,
    location: str | None,
    mode: str,
    actor: audit.Actor,
) -> tuple[Terminal, str]:
    """Register a terminal; returns it and its device key, the only time the key is available. Commits."""
    name = _text(name, "name", gettext("Give the terminal a name, e.g. where it stands."), NAME_MAX)
    serial = _text(
        serial_number, "serial_number", gettext("Give the device's serial number (on its label)."), SERIAL_MAX
    )
    place = _text(location, "location", None, LOCATION_MAX)
    if kind not in KINDS:
        raise InvalidInput(gettext("Choose POS or face-pay device."), "kind")
    if mode not in MODES:
        raise InvalidInput(gettext("Choose test or live."), "mode")
    with tenant_context(db.session, tenant_id):
        _check_live_allowed(_merchant(tenant_id, merchant_id), mode)
        taken = db.session.execute(
            sa.select(Terminal.id).where(
                Terminal.tenant_id == tenant_id, Terminal.merchant_id == merchant_id, Terminal.serial_number == serial
            )
        ).first()
        if taken:
            db.session.rollback()
            raise InvalidInput(
                gettext("A terminal with serial number %(serial)s is already registered.", serial=serial),
                "serial_number",
            )
        secret = _new_secret(mode)
        terminal = Terminal(
            tenant_id=tenant_id,
            id=objects.new_id("tmr"),
            merchant_id=merchant_id,
            name=name,
            kind=kind,
            serial_number=serial,
            location=place,
            mode=mode,
            key_hash=hash_secret(secret),
            key_last4=secret[-4:],
            status="active",
        )
        db.session.add(terminal)
        audit.record(
            tenant_id,
            actor,
            "terminal.registered",
            "terminal",
            terminal.id,
            audit.created(
                name=name,
                kind=kind,
                serial_number=serial,
                location=place,
                mode=mode,
                merchant_id=str(merchant_id),
                key_last4=terminal.key_last4,
            ),
        )
        db.session.commit()
    return terminal, secret


def _locked(terminal: Terminal) -> Terminal:
    row = db.session.get(Terminal, (terminal.tenant_id, terminal.id), with_for_update=True, populate_existing=True)
    if row is None:
        raise InvalidInput(gettext("This terminal no longer exists."))
    return row


def rotate_key(terminal: Terminal, actor: audit.Actor) -> tuple[Terminal, str]:
    """Give the terminal a new device key; the old one stops working at once. Commits."""
    with tenant_context(db.session, terminal.tenant_id):
        row = _locked(terminal)
        if not row.is_active:
            db.session.rollback()
            raise InvalidInput(gettext("This terminal is deactivated; register the device again instead."))
        before = row.key_last4
        secret = _new_secret(row.mode)
        row.key_hash = hash_secret(secret)
        row.key_last4 = secret[-4:]
        row.key_rotated_at = utcnow()
        audit.record(
            row.tenant_id,
            actor,
            "terminal.key_rotated",
            "terminal",
            row.id,
            {"key_last4": {"before": before, "after": row.key_last4}},
        )
        db.session.commit()
    return row, secret


def deactivate(terminal: Terminal, actor: audit.Actor) -> bool:
    """Stop the terminal (its key no longer works); False when it already was. Commits."""
    with tenant_context(db.session, terminal.tenant_id):
        row = _locked(terminal)
        if not row.is_active:
            db.session.rollback()
            return False
        row.status = "inactive"
        row.deactivated_at = utcnow()
        audit.record(
            row.tenant_id,
            actor,
            "terminal.deactivated",
            "terminal",
            row.id,
            {"status": {"before": "active", "after": "inactive"}},
        )
        db.session.commit()
    return True


def is_device_key(secret: str) -> bool:
    return isinstance(secret, str) and secret.startswith(tuple(PREFIXES.values()))


def authenticate(tenant_id: uuid.UUID, raw_secret: str, *, now: datetime | None = None) -> Terminal | None:
    """The active terminal of `tenant_id` whose device key is `raw_secret`, else None (looked up by
    the key's hash within the tenant; a live terminal of a merchant that is not active is refused)."""
    if not is_device_key(raw_secret) or len(raw_secret) != SECRET_LENGTH:
        return None
    now = now or utcnow()
    with tenant_context(db.session, tenant_id):
        terminal = db.session.execute(
            sa.select(Terminal).where(Terminal.tenant_id == tenant_id, Terminal.key_hash == hash_secret(raw_secret))
        ).scalar_one_or_none()
        if terminal is None or not terminal.is_active:
            return None
        if terminal.mode == "live":
            merchant = db.session.get(Merchant, (tenant_id, terminal.merchant_id))
            if merchant is None or merchant.status != "active":
                return None
        if terminal.last_used_at is None or now - terminal.last_used_at >= LAST_USED_RESOLUTION:
            terminal.last_used_at = now
            db.session.commit()
    return terminal


def list_terminals(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> list[Terminal]:
    """A merchant's terminals, newest first (deactivated ones included)."""
    with tenant_context(db.session, tenant_id):
        return list(
            db.session.execute(
                sa.select(Terminal)
                .where(Terminal.tenant_id == tenant_id, Terminal.merchant_id == merchant_id)
                .order_by(Terminal.created_at.desc(), Terminal.id.desc())
            ).scalars()
        )


def get(tenant_id: uuid.UUID, merchant_id: uuid.UUID, terminal_id: str) -> Terminal | None:
    """The merchant's own terminal of that id, else None (another merchant's looks like none)."""
    with tenant_context(db.session, tenant_id):
        return db.session.execute(
            sa.select(Terminal).where(
                Terminal.tenant_id == tenant_id, Terminal.merchant_id == merchant_id, Terminal.id == terminal_id
            )
        ).scalar_one_or_none()
