"""Merchant dashboard: payments (search, filters, pages), a payment's timeline, and refunds."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from flask import abort, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user

from clearing import listings
from core.db import db
from core.money import MoneyError, to_minor
from payments import intents, payer_details, refunds, terminals
from payments.errors import PaymentError
from payments.models import (
    INTENT_STATUSES,
    REFUND_STATUSES,
    BalanceTransaction,
    ChannelAccount,
    ChannelNotification,
    Event,
    PaymentAttempt,
    PaymentIntent,
    Refund,
)
from payments.products import ELEMENTS
from payments.webhooks import WebhookDelivery, WebhookEndpoint
from portal import reporting, theming
from portal.access import merchant_role_required
from portal.forms import RefundForm
from portal.i18n import format_amount, status_label
from portal.merchant import bp
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.models import MERCHANT_ROLES

PAGE_SIZE = 25
FILTERS = ("q", "status", "terminal", "from", "to", "currency", "min", "max")


def _mode() -> str:
    return "live" if request.args.get("mode") == "live" else "test"


def _tenant_zone() -> ZoneInfo:
    """The tenant's time zone: days in the filters and times on the pages are the tenant's."""
    try:
        return ZoneInfo(g.tenant.time_zone)
    except (ZoneInfoNotFoundError, ValueError):  # not validated when the tenant was created
        return ZoneInfo("UTC")


def _day(text: str) -> date:
    return listings.parse_day(text)


@bp.route("/payments")
@merchant_role_required(*MERCHANT_ROLES)
def payments():
    args = request.args
    mode = _mode()
    zone = _tenant_zone()
    names = _terminal_names()
    scope = listings.Scope(current_user.tenant_id, current_user.merchant_id, zone)
    # The same filters as the page's export (`clearing.listings`), so the file has the page's rows.
    statement, errors = listings.payments(scope, args)
    page = newest_first(statement, PaymentIntent, args.get("after"), PAGE_SIZE)
    # What the user typed, as typed, so the form shows it again and the page links keep it.
    filters = listings.typed(args, FILTERS)
    return theming.render(
        "merchant/payments.html",
        page=page,
        mode=mode,
        filters=filters,
        statuses=INTENT_STATUSES,
        terminal_names=names,
        errors=errors,
        paged=bool(args.get("after")),
        zone=zone.key,
        format_amount=format_amount,
        **reporting.tools("merchant", "payments", scope),
    )


def _terminal_names() -> dict[str, str]:
    """The merchant's terminals, id -> name (deactivated ones too: their payments stay)."""
    return {t.id: t.name for t in terminals.list_terminals(current_user.tenant_id, current_user.merchant_id)}


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


def _sent(attempt: PaymentAttempt, currency: str, channel: str) -> str:
    """What we asked the channel for, from named fields of `attempt.request` only, so nothing that
    might be added there later (a token, a credential) is ever printed."""
    sent = attempt.request or {}
    amount = sent.get("amount", attempt.amount)
    parts = [
        str(sent["product"]) if sent.get("product") else None,
        format_amount(amount, sent.get("currency") or currency) if isinstance(amount, int) else None,
        _("capture %(method)s", method=sent["capture_method"]) if sent.get("capture_method") else None,
        _("to %(channel)s", channel=sent.get("channel") or channel),
    ]
    return _("Sent: %(parts)s", parts=", ".join(part for part in parts if part))


def _answer(attempt: PaymentAttempt) -> str:
    """The channel's answer from named fields of `attempt.response` (the rest is the channel's raw
    summary, kept for support, too long to read here) and our error."""
    answer = attempt.response or {}
    labels = {
        "reference": _("reference %(value)s"),
        "status": _("status %(value)s"),
        "decline_code": _("decline code %(value)s"),
        "failure_code": _("failure code %(value)s"),
    }
    parts = [label % {"value": answer[key]} for key, label in labels.items() if answer.get(key) not in (None, "")]
    if attempt.error:
        parts.append(_("error: %(error)s", error=attempt.error))
    if not parts:
        return _("No answer yet.") if attempt.status in ("started", "unknown") else _("No answer.")
    return _("Answer: %(parts)s", parts=", ".join(parts))


def _masked(element: str, value) -> str:
    """A payer element as the dashboard shows it: enough to recognise, personal data masked."""
    if element == "email":
        local, _sep, domain = value.partition("@")
        return f"{local[:1]}•••@{domain}"
    if element == "payer_name":
        return " ".join(f"{word[:1]}•••" for word in value.split())
    if element in ("phone", "payer_bank_account", "openid"):
        return f"•••{value[-4:]}" if len(value) > 6 else "•••"
    if element == "billing_address":
        return ", ".join(["•••", *(value[key] for key in ("city", "country") if value.get(key))])
    if element == "face_code":
        return _("given (never shown)")
    return str(value)  # a terminal or a member wallet: the merchant's own ids


def _payer(pi: PaymentIntent) -> list[tuple[str, str]]:
    """The payer elements the payment carries, labelled as routing names them, masked."""
    values = payer_details.payer_values(pi.payer_details)
    return [(label, _masked(element, values[element])) for element, label in ELEMENTS.items() if element in values]


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
        name = channel_names.get(attempt.channel_account_id, _("a channel"))
        items.append(
            {
                "at": attempt.created_at,
                "kind": "attempt",
                "title": _("%(kind)s at %(name)s: %(status)s", kind=attempt.kind, name=name, status=attempt.status),
                "sent": _sent(attempt, pi.currency, name),
                "detail": _answer(attempt),
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
                "title": _(
                    "refund %(id)s: %(amount)s %(status)s",
                    id=refund.id,
                    amount=format_amount(refund.amount, refund.currency),
                    status=refund.status,
                ),
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
        answer = (
            f"HTTP {delivery.response_status}" if delivery.response_status else (delivery.error or _("not sent yet"))
        )
        items.append(
            {
                "at": delivery.last_attempt_at or delivery.created_at,
                "kind": "webhook",
                "title": _(
                    "webhook %(event)s to %(url)s: %(status)s", event=event_type, url=url, status=delivery.status
                ),
                "detail": ngettext(
                    "%(num)s attempt, last answer %(answer)s",
                    "%(num)s attempts, last answer %(answer)s",
                    delivery.attempts,
                    answer=answer,
                ),
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
                "title": _(
                    "notification from %(channel)s: %(type)s",
                    channel=channel_names.get(note.channel_account_id, _("the channel")),
                    type=note.type,
                ),
                "detail": _("event %(id)s, %(outcome)s", id=note.event_id, outcome=note.outcome),
            }
        )
    return sorted(items, key=lambda item: item["at"])


@bp.route("/payments/<intent_id>")
@merchant_role_required(*MERCHANT_ROLES)
def payment(intent_id: str):
    pi = _payment(intent_id)
    zone = _tenant_zone()
    charge = db.session.execute(
        sa.select(BalanceTransaction).where(
            BalanceTransaction.tenant_id == pi.tenant_id,
            BalanceTransaction.source == pi.id,
            BalanceTransaction.type == "charge",
        )
    ).scalar_one_or_none()
    return theming.render(
        "merchant/payment.html",
        pi=pi,
        charge=charge,
        timeline=_timeline(pi),
        payer=_payer(pi),
        terminal=terminals.get(pi.tenant_id, pi.merchant_id, pi.terminal_id) if pi.terminal_id else None,
        zone=zone.key,
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
            refund = refunds.create(
                ctx, payment_intent=pi.id, amount=amount, reason=form.reason.data or None, actor=current_actor()
            )
        except MoneyError as exc:
            flash(str(exc), "error")
        except PaymentError as exc:
            flash(exc.message, "error")
        else:
            flash(
                _(
                    "Refund of %(amount)s: %(status)s.",
                    amount=format_amount(refund.amount, refund.currency),
                    status=status_label(refund.status),
                ),
                "success",
            )
    else:
        flash(_("The refund form expired; try again."), "error")
    return redirect(url_for("merchant.payment", intent_id=pi.id))


# --- refunds ---------------------------------------------------------------------------------------

REFUND_FILTERS = ("status", "from", "to", "currency")


@bp.route("/refunds")
@merchant_role_required(*MERCHANT_ROLES)
def refunds_list():
    """The merchant's refunds of one mode, newest first, by status, the tenant's calendar days and
    currency, each linked to its payment; exportable with the same filters."""
    args = request.args
    zone = _tenant_zone()
    scope = listings.Scope(current_user.tenant_id, current_user.merchant_id, zone)
    statement, errors = listings.refunds(scope, args)
    page = newest_first(statement, Refund, args.get("after"), PAGE_SIZE)
    return theming.render(
        "merchant/refunds.html",
        page=page,
        mode=_mode(),
        filters=listings.typed(args, REFUND_FILTERS),
        statuses=REFUND_STATUSES,
        errors=errors,
        paged=bool(args.get("after")),
        zone=zone.key,
        format_amount=format_amount,
        **reporting.tools("merchant", "refunds", scope),
    )
