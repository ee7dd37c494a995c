"""Merchant dashboard: payments (search, filters, pages), a payment's timeline, and refunds."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_login import current_user

from core.db import db
from core.money import MoneyError, format_amount, to_minor
from payments import intents, refunds
from payments.errors import PaymentError
from payments.models import (
    INTENT_STATUSES,
    ChannelAccount,
    ChannelNotification,
    Event,
    PaymentAttempt,
    PaymentIntent,
    Refund,
)
from payments.webhooks import WebhookDelivery, WebhookEndpoint
from portal import theming
from portal.access import merchant_role_required
from portal.forms import RefundForm
from portal.merchant import bp
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants import audit
from tenants.models import MERCHANT_ROLES


def _mode() -> str:
    return "live" if request.args.get("mode") == "live" else "test"


def _day(value: str | None) -> datetime | None:
    try:
        return datetime.combine(datetime.strptime(value or "", "%Y-%m-%d").date(), time.min, tzinfo=UTC)
    except ValueError:
        return None


@bp.route("/payments")
@merchant_role_required(*MERCHANT_ROLES)
def payments():
    args = request.args
    mode = _mode()
    statement = sa.select(PaymentIntent).where(
        PaymentIntent.tenant_id == current_user.tenant_id,
        PaymentIntent.merchant_id == current_user.merchant_id,
        PaymentIntent.livemode == (mode == "live"),
    )
    problems = []
    query = (args.get("q") or "").strip()
    if query:
        statement = statement.where(PaymentIntent.id == query)
    status = args.get("status") or ""
    if status in INTENT_STATUSES:
        statement = statement.where(PaymentIntent.status == status)
    since, until = _day(args.get("from")), _day(args.get("to"))
    if since:
        statement = statement.where(PaymentIntent.created_at >= since)
    if until:
        statement = statement.where(PaymentIntent.created_at < until + timedelta(days=1))
    currency = (args.get("currency") or "").strip().upper()
    for bound, operator in (("min", "__ge__"), ("max", "__le__")):
        raw = (args.get(bound) or "").strip()
        if not raw:
            continue
        if not currency:
            problems.append("Choose a currency to filter by amount.")
            continue
        try:
            statement = statement.where(getattr(PaymentIntent.amount, operator)(to_minor(raw, currency)))
        except MoneyError as exc:
            problems.append(str(exc))
    if currency and not problems:
        statement = statement.where(PaymentIntent.currency == currency)
    page = newest_first(statement, PaymentIntent, args.get("after"), 25)
    filters = {key: args.get(key) for key in ("q", "status", "from", "to", "currency", "min", "max") if args.get(key)}
    return theming.render(
        "merchant/payments.html",
        page=page,
        mode=mode,
        filters=filters,
        statuses=INTENT_STATUSES,
        problems=problems,
        format_amount=format_amount,
    )


def _payment(intent_id: str) -> PaymentIntent:
    pi = db.session.execute(
        sa.select(PaymentIntent).where(
            PaymentIntent.tenant_id == current_user.tenant_id,
            PaymentIntent.merchant_id == current_user.merchant_id,
            PaymentIntent.id == intent_id,
        )
    ).scalar_one_or_none()
    if pi is None:
        abort(404)
    return pi


def _timeline(pi: PaymentIntent) -> list[dict]:
    """What happened to a payment, oldest first: events, channel attempts, refunds, the webhooks sent
    for it and its refunds, and the channel's notifications about it."""
    items = []
    for event in db.session.execute(
        sa.select(Event).where(Event.tenant_id == pi.tenant_id, Event.object_id == pi.id)
    ).scalars():
        items.append({"at": event.created_at, "kind": "event", "title": event.type, "detail": ""})
    channel_names = dict(db.session.execute(sa.select(ChannelAccount.id, ChannelAccount.name)).all())
    for attempt in db.session.execute(
        sa.select(PaymentAttempt).where(
            PaymentAttempt.tenant_id == pi.tenant_id, PaymentAttempt.payment_intent_id == pi.id
        )
    ).scalars():
        name = channel_names.get(attempt.channel_account_id, "a channel")
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(attempt.response.items()) if v not in (None, "", {}))
        items.append(
            {
                "at": attempt.created_at,
                "kind": "attempt",
                "title": f"{attempt.kind} at {name}: {attempt.status}",
                "detail": attempt.error or detail,
            }
        )
    refund_ids = []
    for refund in db.session.execute(
        sa.select(Refund).where(Refund.tenant_id == pi.tenant_id, Refund.payment_intent_id == pi.id)
    ).scalars():
        refund_ids.append(refund.id)
        items.append(
            {
                "at": refund.created_at,
                "kind": "refund",
                "title": f"refund {refund.id}: {format_amount(refund.amount, refund.currency)} {refund.status}",
                "detail": refund.failure_reason or refund.reason or "",
            }
        )
    deliveries = db.session.execute(
        sa.select(WebhookDelivery, Event.type, WebhookEndpoint.url)
        .join(Event, sa.and_(Event.tenant_id == WebhookDelivery.tenant_id, Event.id == WebhookDelivery.event_id))
        .join(
            WebhookEndpoint,
            sa.and_(
                WebhookEndpoint.tenant_id == WebhookDelivery.tenant_id,
                WebhookEndpoint.id == WebhookDelivery.endpoint_id,
            ),
        )
        .where(WebhookDelivery.tenant_id == pi.tenant_id, Event.object_id.in_([pi.id, *refund_ids]))
    ).all()
    for delivery, event_type, url in deliveries:
        answer = f"HTTP {delivery.response_status}" if delivery.response_status else (delivery.error or "not sent yet")
        items.append(
            {
                "at": delivery.last_attempt_at or delivery.created_at,
                "kind": "webhook",
                "title": f"webhook {event_type} to {url}: {delivery.status}",
                "detail": f"{delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'}, last answer {answer}",
            }
        )
    for note in db.session.execute(
        sa.select(ChannelNotification).where(
            ChannelNotification.tenant_id == pi.tenant_id, ChannelNotification.payment_intent_id == pi.id
        )
    ).scalars():
        items.append(
            {
                "at": note.received_at,
                "kind": "notification",
                "title": f"notification from {channel_names.get(note.channel_account_id, 'the channel')}: {note.type}",
                "detail": f"event {note.event_id}, {note.outcome}",
            }
        )
    return sorted(items, key=lambda item: item["at"])


@bp.route("/payments/<intent_id>")
@merchant_role_required(*MERCHANT_ROLES)
def payment(intent_id: str):
    pi = _payment(intent_id)
    return theming.render(
        "merchant/payment.html",
        pi=pi,
        timeline=_timeline(pi),
        form=RefundForm(),
        format_amount=format_amount,
        refundable=pi.status == "succeeded" and pi.amount_received > pi.amount_refunded,
    )


@bp.route("/payments/<intent_id>/refund", methods=["POST"])
@merchant_role_required("owner")
def refund_payment(intent_id: str):
    pi = _payment(intent_id)
    form = RefundForm()
    if form.validate_on_submit():
        ctx = intents.MerchantContext(pi.tenant_id, pi.merchant_id, pi.livemode)
        try:
            amount = to_minor(form.amount.data, pi.currency) if (form.amount.data or "").strip() else None
            refund = refunds.create(ctx, payment_intent=pi.id, amount=amount, reason=form.reason.data or None)
        except MoneyError as exc:
            flash(str(exc), "error")
        except PaymentError as exc:
            flash(exc.message, "error")
        else:
            audit.record(
                pi.tenant_id,
                current_actor(),
                "payment.refunded",
                "payment_intent",
                pi.id,
                audit.created(refund=refund.id, amount=refund.amount, currency=refund.currency, status=refund.status),
            )
            db.session.commit()
            flash(f"Refund of {format_amount(refund.amount, refund.currency)}: {refund.status}.", "success")
    else:
        flash("The refund form expired; try again.", "error")
    return redirect(url_for("merchant.payment", intent_id=pi.id))
