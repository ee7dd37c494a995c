"""Merchant dashboard: payouts (withdrawals to the merchant's bank account) and the bank account
they go to.

Every user of the merchant reads both pages; only the owner requests and cancels payouts and sets
the bank account (anyone else's POST is 403). A request holds its amount at once
(`payments.balance_operations.create_payout`: available -> reserved, status `pending`, committed
there); the platform sends pending payouts to the bank in batches (`clearing.payouts`), only
those of merchants with a bank account. People type major units ("250.00"); times are shown in
the tenant's time zone.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import Length, Optional

from clearing import listings
from clearing import payouts as clearing_payouts
from clearing.models import MerchantBankAccount
from core.db import db
from core.money import MoneyError, normalise_currency, to_minor
from payments import balance_operations, intents, refunds
from payments.errors import PaymentError
from payments.models import PAYOUT_STATUSES, Payout
from portal import reporting, theming
from portal.access import merchant_role_required
from portal.forms import EXPIRED, ActionForm, add_error, field_error, note_expired
from portal.i18n import format_amount, status_label
from portal.merchant import bp
from portal.merchant.payments import _mode, _tenant_zone
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import MERCHANT_ROLES

PAGE_SIZE = 25
FILTERS = ("status",)
DESCRIPTION_MAX = 140  # what reaches the bank as the transfer's text (`clearing.payouts.batch_lines`)


# --- forms ---------------------------------------------------------------------------------


class PayoutForm(FlaskForm):
    amount = StringField(
        _l("Amount"),
        validators=[Length(max=30)],
        description=_l("In the currency's units, like 250.00 (not in cents)."),
    )
    currency = StringField(_l("Currency"), validators=[Length(max=10)], description=_l("For example EUR."))
    description = StringField(
        _l("Description"),
        validators=[Optional(), Length(max=DESCRIPTION_MAX)],
        description=_l(
            "Optional: the text of the bank transfer (at most %(num)s characters).",
            num=DESCRIPTION_MAX,
        ),
    )


class BankAccountForm(FlaskForm):
    holder_name = StringField(_l("Account holder"), validators=[Length(max=140)])
    account = StringField(
        _l("IBAN or account number"),
        validators=[Length(max=64)],
        description=_l("Stored encrypted; the pages show only its last four characters."),
    )
    bank_code = StringField(
        _l("BIC or bank code"),
        validators=[Length(max=34)],
        description=_l(
            "The BIC (optional with an IBAN), or the bank code an account number needs: routing number, "
            "sort code, CNAPS code."
        ),
    )
    bank_name = StringField(_l("Bank name"), validators=[Optional(), Length(max=140)], description=_l("Optional."))
    country = StringField(
        _l("Bank country"),
        validators=[Length(max=10)],
        description=_l("Two letters, like US, for an account number; an IBAN carries its own."),
    )


# --- helpers -------------------------------------------------------------------------------


def _ctx(livemode: bool) -> intents.MerchantContext:
    return intents.MerchantContext(current_user.tenant_id, current_user.merchant_id, livemode)


def _available(livemode: bool) -> dict[str, int]:
    """Available balance per currency (upper case) of the signed-in merchant in one mode."""
    balance = refunds.balance(_ctx(livemode))
    return {item["currency"].upper(): item["amount"] for item in balance["available"]}


def _held(livemode: bool) -> dict[str, dict[str, int]]:
    """Per currency: what pending payouts hold, and what is on the way to the bank."""
    rows = db.session.execute(
        sa.select(Payout.currency, Payout.status, sa.func.sum(Payout.amount))
        .where(
            Payout.tenant_id == current_user.tenant_id,
            Payout.merchant_id == current_user.merchant_id,
            Payout.livemode == livemode,
            Payout.status.in_(("pending", "in_transit")),
        )
        .group_by(Payout.currency, Payout.status)
    ).all()
    held: dict[str, dict[str, int]] = {}
    for currency, status, total in rows:
        held.setdefault(currency.upper(), {})[status] = int(total)
    return held


def _balances(livemode: bool) -> list[dict]:
    available = _available(livemode)
    held = _held(livemode)
    return [
        {
            "currency": currency,
            "available": format_amount(available.get(currency, 0), currency),
            "pending": format_amount(held.get(currency, {}).get("pending", 0), currency),
            "in_transit": format_amount(held.get(currency, {}).get("in_transit", 0), currency),
        }
        for currency in sorted(set(available) | set(held))
    ]


def _payout(payout_id: str) -> Payout:
    """A payout of the signed-in user's own merchant; any other id (another merchant's, another
    tenant's, none) is 404."""
    payout = db.session.execute(
        sa.select(Payout).where(
            Payout.tenant_id == current_user.tenant_id,
            Payout.merchant_id == current_user.merchant_id,
            Payout.id == payout_id,
        )
    ).scalar_one_or_none()
    if payout is None:
        abort(404)
    return payout


def _bank_account() -> MerchantBankAccount | None:
    return clearing_payouts.bank_account_of(current_user.tenant_id, current_user.merchant_id)


# --- payouts -------------------------------------------------------------------------------


def _payouts_page(mode: str, form: PayoutForm | None = None, status: int = 200):
    args = request.args
    zone = _tenant_zone()
    balances = _balances(mode == "live")
    scope = listings.Scope(current_user.tenant_id, current_user.merchant_id, zone)
    # The same filters as the page's export (`clearing.listings`).
    statement, errors = listings.payouts(scope, args)
    page = newest_first(statement, Payout, args.get("after"), PAGE_SIZE)
    if form is None:
        # The currency of the first balance, so that the usual request is one amount to type.
        form = PayoutForm(data={"currency": balances[0]["currency"] if balances else ""})
    return theming.render(
        "merchant/payouts.html",
        mode=mode,
        balances=balances,
        bank_account=_bank_account(),
        form=form,
        action_form=ActionForm(),
        page=page,
        filters={key: args[key] for key in FILTERS if args.get(key)},
        statuses=PAYOUT_STATUSES,
        errors=errors,
        paged=bool(args.get("after")),
        zone=zone.key,
        format_amount=format_amount,
        **reporting.tools("merchant", "payouts", scope),
    ), status


def _request_payout(form: PayoutForm, mode: str) -> Payout | None:
    """The payout the form asks for, held and committed; None with the reasons on the form's fields
    (nothing is held then)."""
    currency = None
    currency_text = (form.currency.data or "").strip()
    if not currency_text:
        add_error(form.currency, _("Give the currency, for example EUR."))
    else:
        try:
            currency = normalise_currency(currency_text)
        except MoneyError as exc:
            add_error(form.currency, str(exc))
    amount = None
    amount_text = (form.amount.data or "").strip()
    if not amount_text:
        add_error(form.amount, _("Give the amount to pay out, for example 250.00."))
    elif currency is not None:
        try:
            amount = to_minor(amount_text, currency)
        except MoneyError as exc:
            add_error(form.amount, str(exc))
        else:
            if amount <= 0:
                add_error(form.amount, _("The amount must be more than zero."))
                amount = None
    if currency is None or amount is None:
        return None
    ctx = _ctx(mode == "live")
    try:
        payout = balance_operations.create_payout(
            ctx,
            amount=amount,
            currency=currency,
            description=(form.description.data or "").strip() or None,
            actor=current_actor(),
        )
    except PaymentError as exc:
        db.session.rollback()
        if exc.code == "insufficient_funds":
            available = _available(mode == "live").get(currency, 0)
            add_error(
                form.amount,
                _(
                    "That is more than your available balance: %(amount)s is available in %(mode)s mode. Nothing was"
                    " held.",
                    amount=format_amount(available, currency),
                    mode=status_label(mode),
                ),
            )
        else:
            field = {"amount": form.amount, "currency": form.currency, "description": form.description}.get(
                exc.param or ""
            )
            if field is not None:
                add_error(field, exc.message)
            else:
                form.form_errors.append(exc.message)
        return None
    return payout


@bp.route("/payouts", methods=["GET", "POST"])
@merchant_role_required(*MERCHANT_ROLES)
def payouts():
    mode = _mode()
    if request.method == "GET":
        return _payouts_page(mode)
    if current_user.role != "owner":
        abort(403)
    form = PayoutForm()
    if not form.validate_on_submit():
        note_expired(form)
        return _payouts_page(mode, form, 422)
    payout = _request_payout(form, mode)
    if payout is None:
        return _payouts_page(mode, form, 422)
    amount = format_amount(payout.amount, payout.currency)
    if _bank_account() is None:
        message = _(
            "Payout %(id)s of %(amount)s requested: the amount is held from your available balance at once, and goes"
            " to the bank with the next batch. It waits until you set a bank account.",
            id=payout.id,
            amount=amount,
        )
    else:
        message = _(
            "Payout %(id)s of %(amount)s requested: the amount is held from your available balance at once, and goes"
            " to the bank with the next batch.",
            id=payout.id,
            amount=amount,
        )
    flash(message, "success")
    return redirect(url_for("merchant.payouts", mode=mode))


@bp.route("/payouts/<payout_id>/cancel", methods=["POST"])
@merchant_role_required("owner")
def cancel_payout(payout_id: str):
    payout = _payout(payout_id)
    back = redirect(url_for("merchant.payouts", mode="live" if payout.livemode else "test"))
    if not ActionForm().validate_on_submit():
        flash(EXPIRED, "error")
        return back
    ctx = _ctx(payout.livemode)
    try:
        canceled = balance_operations.cancel_payout(ctx, payout.id, current_actor())
    except PaymentError as exc:
        flash(_("The payout %(id)s was not canceled: %(message)s", id=payout.id, message=exc.message), "error")
        return back
    flash(
        _(
            "Payout %(id)s is canceled: %(amount)s is back in your available balance.",
            id=canceled.id,
            amount=format_amount(canceled.amount, canceled.currency),
        ),
        "success",
    )
    return back


# --- the bank account ------------------------------------------------------------------------


def _bank_account_page(form: BankAccountForm, status: int = 200):
    zone = _tenant_zone()
    waiting = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Payout)
        .where(
            Payout.tenant_id == current_user.tenant_id,
            Payout.merchant_id == current_user.merchant_id,
            Payout.status == "pending",
        )
    )
    return theming.render(
        "merchant/bank_account.html",
        account=_bank_account(),
        form=form,
        waiting=waiting,
        zone=zone.key,
    ), status


@bp.route("/bank-account", methods=["GET", "POST"])
@merchant_role_required(*MERCHANT_ROLES)
def bank_account():
    if request.method == "GET":
        account = _bank_account()
        # The stored account number is never put back into the form: replacing it means typing it.
        data = (
            {
                "holder_name": account.holder_name,
                "bank_code": account.bank_code or "",
                "bank_name": account.bank_name,
                "country": account.country if account.kind == "number" else "",
            }
            if account
            else None
        )
        return _bank_account_page(BankAccountForm(data=data))
    if current_user.role != "owner":
        abort(403)
    form = BankAccountForm()
    if not form.validate_on_submit():
        note_expired(form)
        return _bank_account_page(form, 422)
    try:
        saved = clearing_payouts.set_bank_account(
            current_user.tenant_id,
            current_user.merchant_id,
            holder_name=form.holder_name.data or "",
            account=form.account.data or "",
            bank_code=form.bank_code.data or "",
            bank_name=form.bank_name.data or "",
            country=form.country.data or "",
            actor=current_actor(),
        )
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _bank_account_page(form, 422)
    db.session.commit()
    flash(
        _(
            "Bank account saved: payouts not yet sent to the bank go to %(holder_name)s, account …%(account_last4)s.",
            holder_name=saved.holder_name,
            account_last4=saved.account_last4,
        ),
        "success",
    )
    return redirect(url_for("merchant.bank_account"))
