"""Orders: the priced lines of one PaymentIntent, from charge items and an optional coupon.

`create_order` prices the lines (`billing.pricing.quote`), locks and reserves the coupon
(`billing.coupons`), and creates the PaymentIntent for the total through
`payments.intents.create`, whose transaction also writes the order, its lines and the coupon's
redemption: all of it is committed together or not at all. The intent's amount is the order's
total, and the lines (items, then the discount as a negative line) add up to it exactly, so what
the payer is shown is what is charged. `lines_of` gives the lines to whoever shows the payment
(the hosted checkout, the merchant's payment page).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from billing import catalog, coupons
from billing.models import ChargeItem, Coupon, CouponRedemption
from billing.pricing import CouponNotApplicable, Line, PricingError, Quote, quote
from core.db import db
from core.money import format_amount
from payments import intents
from payments.errors import InvalidRequest
from payments.intents import MerchantContext
from payments.models import PaymentIntent
from payments.order_models import Order, OrderLine


@dataclass(frozen=True)
class ItemRequest:
    """A charge item and how many of it; `param` names it in errors ("line_items[0]")."""

    charge_item: str
    quantity: int = 1
    param: str = "line_items"


def lines_from_items(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, wanted: Sequence[ItemRequest]
) -> tuple[list[Line], str, list[str] | None]:
    """Lines at the items' current prices, their one currency, and the payment method types all
    of them may be paid with (None: no item restricts them). Errors name the line's parameter."""
    if not wanted:
        raise InvalidRequest("Give at least one line item.", code="parameter_missing", param="line_items")
    ids = {}
    for request in wanted:
        try:
            ids[request.param] = uuid.UUID(str(request.charge_item))
        except ValueError:
            raise InvalidRequest(
                f"No such charge item: '{request.charge_item}'",
                code="resource_missing",
                param=f"{request.param}[charge_item]",
            ) from None
    items = catalog.items_by_id(tenant_id, merchant_id, ids.values())
    lines, currency, types = [], None, None
    for request in wanted:
        item: ChargeItem | None = items.get(ids[request.param])
        if item is None or not item.active:
            raise InvalidRequest(
                f"No such charge item: '{request.charge_item}'" + (" (it is deactivated)" if item is not None else ""),
                code="resource_missing",
                param=f"{request.param}[charge_item]",
            )
        if isinstance(request.quantity, bool) or not isinstance(request.quantity, int) or request.quantity < 1:
            raise InvalidRequest(
                "A quantity is a whole number of at least 1.",
                code="parameter_invalid_integer",
                param=f"{request.param}[quantity]",
            )
        if currency is not None and item.currency != currency:
            raise InvalidRequest(
                f"All line items must be in one currency: {item.name} is in {item.currency}, an earlier item in "
                f"{currency}.",
                param=f"{request.param}[charge_item]",
            )
        currency = item.currency
        if item.payment_method_types:
            allowed = set(item.payment_method_types)
            types = [t for t in types if t in allowed] if types is not None else list(item.payment_method_types)
            if not types:
                raise InvalidRequest(
                    f"These charge items cannot be paid with one payment method: {item.name} only takes "
                    f"{', '.join(item.payment_method_types)}.",
                    code="payment_method_unavailable",
                    param=f"{request.param}[charge_item]",
                )
        lines.append(
            Line(
                description=item.name,
                unit_amount=item.unit_amount,
                quantity=request.quantity,
                charge_item_id=str(item.id),
                unit=item.unit,
                tax_inclusive=item.tax_inclusive,
            )
        )
    return lines, currency, types


def price(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    lines: Sequence[Line],
    currency: str,
    coupon_code: str | None = None,
    *,
    payer_email: str | None = None,
    lock: bool = False,
) -> tuple[Quote, Coupon | None]:
    """The quote of `lines` with the coupon of `coupon_code` (checked now: valid, not expired, not
    used up, its minimum met, and, with `payer_email`, not used up by that payer). `lock`: lock
    the coupon's row for a reservation in this transaction. Raises `coupons.CouponRefused`."""
    coupon = None
    if coupon_code:
        coupon = coupons.find_for_order(tenant_id, merchant_id, coupon_code, lock=lock)
        if payer_email or lock:  # a reservation always counts its payer's uses
            coupons.check_payer(coupon, payer_email)
    try:
        return quote(lines, currency, coupons.discount(coupon) if coupon else None), coupon
    except CouponNotApplicable as exc:
        raise coupons.CouponRefused(str(exc)) from None
    except PricingError as exc:
        raise InvalidRequest(f"The order cannot be priced: {exc}.", param="line_items") from None


def create_order(
    ctx: MerchantContext,
    lines: Sequence[Line],
    currency: str,
    *,
    coupon_code: str | None = None,
    payer_email: str | None = None,
    payment_link_id: str | None = None,
    payment_method_types: list[str] | None = None,
    expected_amount: int | None = None,
    **intent_fields: Any,
) -> PaymentIntent:
    """Create the PaymentIntent of an order, for its total, with its lines and the coupon's
    reservation in the same transaction. `expected_amount`: an amount the caller also sent,
    which must equal the total. `intent_fields` go to `intents.create` (description, metadata,
    payer_details, confirm, ...). A refused coupon is an `InvalidRequest` on `coupon` (or on
    `receipt_email`); nothing is written then."""
    try:
        try:
            quoted, coupon = price(
                ctx.tenant_id, ctx.merchant_id, lines, currency, coupon_code, payer_email=payer_email, lock=True
            )
        except coupons.CouponRefused as exc:
            raise InvalidRequest(exc.message, code="coupon_invalid", param=exc.param) from None
        if expected_amount is not None and expected_amount != quoted.total:
            raise InvalidRequest(
                f"amount ({expected_amount}) does not match the line items' total ({quoted.total}, "
                f"{format_amount(quoted.total, currency)}); leave amount out to have it computed.",
                code="amount_mismatch",
                param="amount",
            )
        if quoted.total < 1:
            raise InvalidRequest(
                f"The order's total is {format_amount(quoted.total, currency)}: there is nothing to pay, so no "
                "payment can be created.",
                code="amount_too_small",
                param="coupon" if quoted.discount else "line_items",
            )

        def attach(pi: PaymentIntent) -> None:
            _write_order(pi, quoted, coupon, payer_email, payment_link_id)

        return intents.create(
            ctx,
            amount=quoted.total,
            currency=currency,
            payment_method_types=payment_method_types,
            attach=attach,
            **intent_fields,
        )
    except BaseException:
        # The coupon's row lock (and anything written) goes; `intents.create` commits on success.
        db.session.rollback()
        raise


def _write_order(pi: PaymentIntent, quoted: Quote, coupon: Coupon | None, payer_email: str | None, link_id) -> None:
    db.session.add(
        Order(
            tenant_id=pi.tenant_id,
            payment_intent_id=pi.id,
            merchant_id=pi.merchant_id,
            currency=quoted.currency,
            subtotal=quoted.subtotal,
            discount=quoted.discount,
            total=quoted.total,
            coupon_id=coupon.id if coupon else None,
            coupon_code=coupon.code if coupon else None,
            payment_link_id=link_id,
            payer_email=payer_email.lower() if payer_email else None,
        )
    )
    db.session.flush()  # the order before its lines (they refer to it)
    db.session.add_all(
        OrderLine(
            tenant_id=pi.tenant_id,
            payment_intent_id=pi.id,
            position=position,
            kind=line.kind,
            description=line.description[:300],
            charge_item_id=uuid.UUID(line.charge_item_id) if line.charge_item_id else None,
            unit=line.unit,
            quantity=line.quantity,
            unit_amount=line.unit_amount,
            amount=line.amount,
            tax_inclusive=line.tax_inclusive,
        )
        for position, line in enumerate(quoted.lines, start=1)
    )
    if coupon is not None:
        coupons.reserve(coupon, pi.id, payer_email, quoted.discount)


# --- reading ---------------------------------------------------------------------------------


def lines_of(tenant_id: uuid.UUID, intent_id: str) -> list[OrderLine]:
    """The lines of the PaymentIntent's order, in the order shown (items, then the discount);
    empty for a payment that has no order (created with a bare amount)."""
    return list(
        db.session.execute(
            sa.select(OrderLine)
            .where(OrderLine.tenant_id == tenant_id, OrderLine.payment_intent_id == intent_id)
            .order_by(OrderLine.position)
        ).scalars()
    )


def order_of(tenant_id: uuid.UUID, intent_id: str) -> Order | None:
    return db.session.get(Order, (tenant_id, intent_id))


@dataclass(frozen=True)
class CouponUsage:
    held: int  # uses reserved now (open or paid payments)
    paid: int  # of which paid
    released: int  # given back by canceled payments


def coupon_usage(tenant_id: uuid.UUID, coupon_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CouponUsage]:
    """How each coupon has been used, in one query."""
    if not coupon_ids:
        return {}
    r = CouponRedemption
    rows = db.session.execute(
        sa.select(
            r.coupon_id,
            sa.func.count().filter(r.status == "reserved"),
            sa.func.count().filter(r.status == "reserved", PaymentIntent.status == "succeeded"),
            sa.func.count().filter(r.status == "released"),
        )
        .join(
            PaymentIntent,
            sa.and_(PaymentIntent.tenant_id == r.tenant_id, PaymentIntent.id == r.payment_intent_id),
        )
        .where(r.tenant_id == tenant_id, r.coupon_id.in_(list(coupon_ids)))
        .group_by(r.coupon_id)
    ).all()
    usage = {coupon_id: CouponUsage(0, 0, 0) for coupon_id in coupon_ids}
    usage.update({row[0]: CouponUsage(row[1], row[2], row[3]) for row in rows})
    return usage
