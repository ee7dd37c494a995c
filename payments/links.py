"""Payment links: a URL (and its QR code) a merchant hands out, paid on the tenant's own site.

A link asks for a fixed amount or for charge items with quantities (each optionally adjustable
by the payer within a minimum and a maximum). It is open until it expires, is deactivated, or
has been paid `max_payments` times (payments that succeeded). Paying a link (`pay`) locks the
link's row, checks it is still open, prices the order at the items' current prices with the
payer's coupon, and creates the order and its PaymentIntent in one transaction
(`payments.orders.create_order`); an unavailable link creates nothing.

Payments already open when the last paid use happens may still complete: the limit counts paid
payments, and a link does not hold a use for a payer who may never pay.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from billing import catalog
from billing.models import ChargeItem
from billing.pricing import MAX_QUANTITY, Line, Quote
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency, to_minor
from payments import objects, orders
from payments.errors import InvalidRequest
from payments.intents import MAX_AMOUNT, MerchantContext, clean_return_url
from payments.models import PaymentIntent
from payments.order_models import Order, PaymentLink, PaymentLinkItem
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput

NAME_MAX = 200


class LinkUnavailable(Exception):
    """The link cannot be paid now; `reason` is "inactive", "expired" or "used_up"."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LinkItemInput:
    charge_item: uuid.UUID
    quantity: int = 1
    adjustable: bool = False
    min_quantity: int | None = None
    max_quantity: int | None = None


@dataclass(frozen=True)
class LinkInput:
    """A fixed `amount` (typed, in `currency`) or `items`, not both."""

    name: str
    livemode: bool = False
    amount: str = ""
    currency: str = ""
    items: Sequence[LinkItemInput] = ()
    expires_at: datetime | None = None
    max_payments: int | None = None
    allow_coupons: bool = True
    after_payment_url: str = ""  # the merchant's page the payer goes back to after paying


@dataclass(frozen=True)
class LinkLine:
    """A link's item as the payer sees it: the item now, the quantity and its bounds."""

    item: ChargeItem
    quantity: int
    adjustable: bool
    min_quantity: int
    max_quantity: int
    position: int


def _now() -> datetime:
    return datetime.now(UTC)


def _clean(tenant_id: uuid.UUID, merchant_id: uuid.UUID, spec: LinkInput) -> tuple[dict, list[PaymentLinkItem]]:
    name = (spec.name or "").strip()
    if not name:
        raise InvalidInput(gettext("Give the link a name the payer will see, e.g. “Yoga class”."), "name")
    if len(name) > NAME_MAX:
        raise InvalidInput(gettext("A name has at most %(limit)s characters.", limit=NAME_MAX), "name")
    if spec.expires_at is not None and spec.expires_at <= _now():
        raise InvalidInput(gettext("The expiry is in the past."), "expires_at")
    if spec.max_payments is not None and spec.max_payments < 1:
        raise InvalidInput(gettext("A limit is at least 1 (leave it empty for no limit)."), "max_payments")
    try:
        after_payment_url = clean_return_url(spec.after_payment_url, "after_payment_url")
    except InvalidRequest:
        raise InvalidInput(
            gettext(
                "Give a whole web address starting with https:// or http://, e.g. https://shop.example.com/thanks."
            ),
            "after_payment_url",
        ) from None
    values = {
        "name": name,
        "livemode": spec.livemode,
        "expires_at": spec.expires_at,
        "max_payments": spec.max_payments,
        "allow_coupons": spec.allow_coupons,
        "after_payment_url": after_payment_url,
    }
    has_amount = bool((spec.amount or "").strip())
    if has_amount == bool(spec.items):
        raise InvalidInput(gettext("Give either a fixed amount or at least one charge item."), "amount")
    if has_amount:
        try:
            currency = normalise_currency(spec.currency)
        except MoneyError as exc:
            raise InvalidInput(str(exc), "currency") from None
        try:
            amount = to_minor(spec.amount, currency)
        except MoneyError as exc:
            raise InvalidInput(str(exc), "amount") from None
        if not 1 <= amount <= MAX_AMOUNT:
            raise InvalidInput(gettext("The amount must be more than 0."), "amount")
        return {**values, "kind": "amount", "amount": amount, "currency": currency}, []
    found = catalog.items_by_id(tenant_id, merchant_id, [i.charge_item for i in spec.items])
    rows, currency = [], None
    for position, wanted in enumerate(spec.items, start=1):
        item = found.get(wanted.charge_item)
        if item is None or not item.active:
            raise InvalidInput(
                gettext("Item %(position)s: choose one of your active charge items.", position=position), "items"
            )
        if currency is not None and item.currency != currency:
            raise InvalidInput(
                gettext(
                    "Item %(position)s: %(name)s is in %(currency)s, an earlier item in %(earlier)s; a link "
                    "takes one currency.",
                    position=position,
                    name=item.name,
                    currency=item.currency,
                    earlier=currency,
                ),
                "items",
            )
        currency = item.currency
        quantity = wanted.quantity
        low = wanted.min_quantity if wanted.adjustable and wanted.min_quantity else quantity
        high = wanted.max_quantity if wanted.adjustable and wanted.max_quantity else quantity
        if wanted.adjustable and wanted.max_quantity is None:
            high = max(quantity, 99)
        if wanted.adjustable and wanted.min_quantity is None:
            low = 1
        if not (1 <= low <= quantity <= high <= MAX_QUANTITY):
            raise InvalidInput(
                gettext(
                    "Item %(position)s: the quantities must satisfy 1 ≤ minimum ≤ quantity ≤ maximum ≤ %(limit)s.",
                    position=position,
                    limit=MAX_QUANTITY,
                ),
                "items",
            )
        rows.append(
            PaymentLinkItem(
                tenant_id=tenant_id,
                position=position,
                charge_item_id=item.id,
                quantity=quantity,
                adjustable=wanted.adjustable,
                min_quantity=low,
                max_quantity=high,
            )
        )
    return {**values, "kind": "items", "amount": None, "currency": currency}, rows


def create_link(tenant_id: uuid.UUID, merchant_id: uuid.UUID, spec: LinkInput, actor: Actor) -> PaymentLink:
    values, rows = _clean(tenant_id, merchant_id, spec)
    link = PaymentLink(tenant_id=tenant_id, id=objects.new_id("plink"), merchant_id=merchant_id, **values)
    db.session.add(link)
    db.session.flush()
    for row in rows:
        row.payment_link_id = link.id
    db.session.add_all(rows)
    change = {**values, "expires_at": values["expires_at"].isoformat() if values["expires_at"] else None}
    change["items"] = [
        {"charge_item": str(r.charge_item_id), "quantity": r.quantity, "min": r.min_quantity, "max": r.max_quantity}
        for r in rows
    ]
    audit.record(tenant_id, actor, "payment_link.created", "payment_link", link.id, audit.created(**change))
    db.session.commit()
    return link


def set_active(link: PaymentLink, active: bool, actor: Actor) -> bool:
    return catalog.switch_active(link, "payment_link", active, actor)


def get_link(tenant_id: uuid.UUID, merchant_id: uuid.UUID, link_id: str) -> PaymentLink | None:
    """The merchant's own link; None for any other id."""
    return db.session.execute(
        sa.select(PaymentLink).where(
            PaymentLink.tenant_id == tenant_id, PaymentLink.merchant_id == merchant_id, PaymentLink.id == str(link_id)
        )
    ).scalar_one_or_none()


def public_link(tenant_id: uuid.UUID, link_id: str, *, lock: bool = False) -> PaymentLink | None:
    """A link of the tenant, as a payer opens it (any merchant of the tenant); None when unknown."""
    statement = sa.select(PaymentLink).where(PaymentLink.tenant_id == tenant_id, PaymentLink.id == str(link_id))
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return db.session.execute(statement).scalar_one_or_none()


def links_query(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    *,
    livemode: bool,
    search: str | None = None,
    active: bool | None = None,
) -> sa.Select:
    statement = sa.select(PaymentLink).where(
        PaymentLink.tenant_id == tenant_id, PaymentLink.merchant_id == merchant_id, PaymentLink.livemode == livemode
    )
    if search:
        statement = statement.where(sa.or_(PaymentLink.name.ilike(search), PaymentLink.id.ilike(search)))
    if active is not None:
        statement = statement.where(PaymentLink.active == active)
    return statement


def paid_counts(tenant_id: uuid.UUID, link_ids: Sequence[str]) -> dict[str, int]:
    """How many payments of each link succeeded, in one query."""
    if not link_ids:
        return {}
    rows = db.session.execute(
        sa.select(Order.payment_link_id, sa.func.count())
        .join(
            PaymentIntent,
            sa.and_(PaymentIntent.tenant_id == Order.tenant_id, PaymentIntent.id == Order.payment_intent_id),
        )
        .where(Order.tenant_id == tenant_id, Order.payment_link_id.in_(list(link_ids)))
        .where(PaymentIntent.status == "succeeded")
        .group_by(Order.payment_link_id)
    ).all()
    counts = dict.fromkeys(link_ids, 0)
    counts.update({link_id: count for link_id, count in rows})
    return counts


def unavailable_reason(link: PaymentLink, now: datetime | None = None) -> str | None:
    """Why the link cannot be paid now (None: it can)."""
    if not link.active:
        return "inactive"
    if link.expires_at is not None and link.expires_at <= (now or _now()):
        return "expired"
    if link.max_payments is not None and paid_counts(link.tenant_id, [link.id])[link.id] >= link.max_payments:
        return "used_up"
    return None


def lines_of_link(link: PaymentLink) -> list[LinkLine]:
    rows = db.session.execute(
        sa.select(PaymentLinkItem, ChargeItem)
        .join(
            ChargeItem,
            sa.and_(ChargeItem.tenant_id == PaymentLinkItem.tenant_id, ChargeItem.id == PaymentLinkItem.charge_item_id),
        )
        .where(PaymentLinkItem.tenant_id == link.tenant_id, PaymentLinkItem.payment_link_id == link.id)
        .order_by(PaymentLinkItem.position)
    ).all()
    return [
        LinkLine(item, row.quantity, row.adjustable, row.min_quantity, row.max_quantity, row.position)
        for row, item in rows
    ]


def order_lines(link: PaymentLink, quantities: Mapping[int, str | int] | None = None) -> list[Line]:
    """The lines of an order from `link` with the payer's `quantities` (by item position; ignored
    for items that are not adjustable, held within min..max for those that are)."""
    if link.kind == "amount":
        return [Line(description=link.name, unit_amount=link.amount, quantity=1)]
    lines = []
    for line in lines_of_link(link):
        if not line.item.active:
            raise LinkUnavailable("inactive")
        quantity = line.quantity
        if line.adjustable and quantities and line.position in quantities:
            quantity = _quantity(quantities[line.position], line)
        lines.append(
            Line(
                description=line.item.name,
                unit_amount=line.item.unit_amount,
                quantity=quantity,
                charge_item_id=str(line.item.id),
                unit=line.item.unit,
                tax_inclusive=line.item.tax_inclusive,
            )
        )
    return lines


def _quantity(value: str | int, line: LinkLine) -> int:
    try:
        quantity = int(str(value).strip())
    except ValueError:
        raise InvalidRequest(
            f"The quantity of {line.item.name} must be a whole number.", param=f"quantity-{line.position}"
        ) from None
    if not line.min_quantity <= quantity <= line.max_quantity:
        raise InvalidRequest(
            f"The quantity of {line.item.name} must be between {line.min_quantity} and {line.max_quantity}.",
            param=f"quantity-{line.position}",
        )
    return quantity


def payment_method_types(link: PaymentLink) -> list[str] | None:
    """The types every item of the link may be paid with (None: no item restricts them)."""
    types = None
    for line in lines_of_link(link):
        if line.item.payment_method_types:
            allowed = set(line.item.payment_method_types)
            types = [t for t in types if t in allowed] if types is not None else list(line.item.payment_method_types)
    return types


def quote_for(
    link: PaymentLink, quantities: Mapping[int, str | int] | None, coupon_code: str | None, payer_email: str | None
) -> Quote:
    """What the payer would pay now: the lines at today's prices with the coupon (checked but not
    reserved). Raises `InvalidRequest` (a quantity), `coupons.CouponRefused`, `LinkUnavailable`."""
    lines = order_lines(link, quantities)
    quoted, _ = orders.price(
        link.tenant_id,
        link.merchant_id,
        lines,
        link.currency,
        coupon_code if link.allow_coupons else None,
        payer_email=payer_email,
    )
    return quoted


def pay(
    tenant_id: uuid.UUID,
    link_id: str,
    *,
    quantities: Mapping[int, str | int] | None,
    coupon_code: str | None,
    payer_email: str | None,
) -> PaymentIntent:
    """Create the order and its PaymentIntent for a payer of the link. The link's row is locked
    while its availability is checked and the order is written."""
    link = public_link(tenant_id, link_id, lock=True)
    if link is None:
        raise LinkUnavailable("missing")
    reason = unavailable_reason(link)
    if reason:
        db.session.rollback()
        raise LinkUnavailable(reason)
    try:
        lines = order_lines(link, quantities)
        types = payment_method_types(link)
    except (InvalidRequest, LinkUnavailable):
        db.session.rollback()
        raise
    ctx = MerchantContext(link.tenant_id, link.merchant_id, link.livemode)
    return orders.create_order(
        ctx,
        lines,
        link.currency,
        coupon_code=(coupon_code or None) if link.allow_coupons else None,
        payer_email=payer_email,
        payment_link_id=link.id,
        payment_method_types=types,
        description=link.name,
        metadata={"payment_link": link.id},
        payer_details={"receipt_email": payer_email} if payer_email else None,
        return_url=link.after_payment_url,
    )
