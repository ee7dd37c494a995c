"""Charge items (收费项目): what a merchant sells, with a unit and a price per unit (use cases).

Prices are typed as text ("12.50") and converted exactly to minor units (`core.money.to_minor`,
which refuses extra decimals). An order copies the price of each item into its lines when it is
created, so changing a price (or deactivating an item) never rewrites an order already made.
Every change is audited. Nothing here knows about payments: the payment method types an item
may be paid with are checked against the product codes the caller passes.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from billing.models import ChargeItem
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency, to_minor
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput

MAX_UNIT_AMOUNT = 99_999_999_999
NAME_MAX = 200
UNIT_MAX = 40


@dataclass(frozen=True)
class ChargeItemInput:
    """What a merchant typed: `unit_price` in major units of `currency` ("12.50")."""

    name: str
    unit_price: str
    currency: str
    unit: str = "piece"
    tax_inclusive: bool = True
    active: bool = True
    payment_method_types: list[str] = field(default_factory=list)


def _clean(spec: ChargeItemInput, products: Collection[str]) -> dict:
    name = (spec.name or "").strip()
    if not name:
        raise InvalidInput(gettext("Give the item a name."), "name")
    if len(name) > NAME_MAX:
        raise InvalidInput(gettext("A name has at most %(limit)s characters.", limit=NAME_MAX), "name")
    unit = (spec.unit or "").strip() or "piece"
    if len(unit) > UNIT_MAX:
        raise InvalidInput(gettext("A unit has at most %(limit)s characters.", limit=UNIT_MAX), "unit")
    try:
        currency = normalise_currency(spec.currency)
    except MoneyError as exc:
        raise InvalidInput(str(exc), "currency") from None
    if not (spec.unit_price or "").strip():
        raise InvalidInput(gettext("Give the price of one unit, e.g. 12.50."), "unit_price")
    try:
        unit_amount = to_minor(spec.unit_price, currency)
    except MoneyError as exc:
        raise InvalidInput(str(exc), "unit_price") from None
    if unit_amount < 0 or unit_amount > MAX_UNIT_AMOUNT:
        raise InvalidInput(gettext("The price must be at least 0 and at most 999,999,999.99."), "unit_price")
    types = list(dict.fromkeys(t.strip() for t in spec.payment_method_types or () if t.strip()))
    unknown = [t for t in types if t not in products]
    if unknown:
        raise InvalidInput(
            gettext(
                "Unknown payment method type %(unknown)s; known: %(products)s.",
                unknown=repr(unknown[0]),
                products=", ".join(sorted(products)),
            ),
            "payment_method_types",
        )
    return {
        "name": name,
        "unit": unit,
        "unit_amount": unit_amount,
        "currency": currency,
        "tax_inclusive": bool(spec.tax_inclusive),
        "active": bool(spec.active),
        "payment_method_types": types,
    }


def _values(item: ChargeItem) -> dict:
    return {
        "name": item.name,
        "unit": item.unit,
        "unit_amount": item.unit_amount,
        "currency": item.currency,
        "tax_inclusive": item.tax_inclusive,
        "active": item.active,
        "payment_method_types": list(item.payment_method_types or []),
    }


def create_item(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, spec: ChargeItemInput, products: Collection[str], actor: Actor
) -> ChargeItem:
    values = _clean(spec, products)
    item = ChargeItem(tenant_id=tenant_id, merchant_id=merchant_id, **values)
    db.session.add(item)
    db.session.flush()
    audit.record(tenant_id, actor, "charge_item.created", "charge_item", item.id, audit.created(**values))
    db.session.commit()
    return item


def update_item(item: ChargeItem, spec: ChargeItemInput, products: Collection[str], actor: Actor) -> ChargeItem:
    """A new price applies to orders made from now on; orders already made keep theirs."""
    values = _clean(spec, products)
    before = _values(item)
    for name, value in values.items():
        setattr(item, name, value)
    change = audit.changes(before, values)
    if change:
        audit.record(item.tenant_id, actor, "charge_item.updated", "charge_item", item.id, change)
    db.session.commit()
    return item


def switch_active(row, object_type: str, active: bool, actor: Actor) -> bool:
    """Activate or deactivate a merchant's row (a charge item, coupon or payment link), audited as
    `<object_type>.activated|deactivated`; False when it already was. Commits."""
    if row.active == active:
        return False
    row.active = active
    audit.record(
        row.tenant_id,
        actor,
        f"{object_type}.activated" if active else f"{object_type}.deactivated",
        object_type,
        row.id,
        audit.changes({"active": not active}, {"active": active}),
    )
    db.session.commit()
    return True


def set_active(item: ChargeItem, active: bool, actor: Actor) -> bool:
    """Activate or deactivate; False when it already was."""
    return switch_active(item, "charge_item", active, actor)


def get_item(tenant_id: uuid.UUID, merchant_id: uuid.UUID, item_id: uuid.UUID | str) -> ChargeItem | None:
    """The merchant's own item; None for any other id (another merchant's, another tenant's, none)."""
    try:
        ident = item_id if isinstance(item_id, uuid.UUID) else uuid.UUID(str(item_id))
    except ValueError:
        return None
    return db.session.execute(
        sa.select(ChargeItem).where(
            ChargeItem.tenant_id == tenant_id, ChargeItem.merchant_id == merchant_id, ChargeItem.id == ident
        )
    ).scalar_one_or_none()


def items_by_id(tenant_id: uuid.UUID, merchant_id: uuid.UUID, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ChargeItem]:
    """The merchant's items among `ids`, by id, in one query."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = db.session.execute(
        sa.select(ChargeItem).where(
            ChargeItem.tenant_id == tenant_id, ChargeItem.merchant_id == merchant_id, ChargeItem.id.in_(wanted)
        )
    ).scalars()
    return {item.id: item for item in rows}


def items_query(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, *, search: str | None = None, active: bool | None = None
) -> sa.Select:
    """The merchant's items, for a keyset-paginated list: `search` an ILIKE pattern of the name."""
    statement = sa.select(ChargeItem).where(ChargeItem.tenant_id == tenant_id, ChargeItem.merchant_id == merchant_id)
    if search:
        statement = statement.where(ChargeItem.name.ilike(search))
    if active is not None:
        statement = statement.where(ChargeItem.active == active)
    return statement


def active_items(tenant_id: uuid.UUID, merchant_id: uuid.UUID, limit: int = 500) -> list[ChargeItem]:
    """The merchant's active items by name (to choose from when building a payment link)."""
    return list(
        db.session.execute(
            sa.select(ChargeItem)
            .where(ChargeItem.tenant_id == tenant_id, ChargeItem.merchant_id == merchant_id, ChargeItem.active)
            .order_by(ChargeItem.name, ChargeItem.id)
            .limit(limit)
        ).scalars()
    )
