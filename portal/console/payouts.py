"""Console: payouts. What merchants asked to withdraw and is not sent yet (per currency and mode,
and how many wait for a bank account), batch runs that put the sendable payouts into bank batches
(start one now, follow its progress), the batches with their bank files (CSV, ISO 20022
pain.001), the bank's result file, the account payouts are sent from, and a merchant's bank
account on the merchant page.

Admins, operators and finance read; admins and finance start batch runs, import result files and
set the sending account. The use cases in `clearing.payouts` validate, write and audit; these
views commit (`import_results` commits itself). Account numbers are shown by their last four
characters only; the bank files carry them whole.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from flask import Response, abort, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import StringField
from wtforms.validators import Length

from clearing import jobs, listings
from clearing import payouts as clearing_payouts
from clearing.models import ClearingRun, ClearingSettings, MerchantBankAccount, PayoutBatch
from core import crypto
from core.db import db
from payments.models import Payout
from portal import reporting, theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.console.fees import _zone
from portal.forms import EXPIRED, ActionForm, add_error, field_error, note_expired
from portal.i18n import format_amount, format_when
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import Merchant

PAYOUT_READERS = ("admin", "operator", "finance")
PAYOUT_MANAGERS = ("admin", "finance")
PAGE_SIZE = 25
REFRESH_SECONDS = 3
RUNS_SHOWN = 20
RESULT_FILE_MAX_BYTES = 10 * 1024 * 1024
# The multipart request around a result file: boundaries, part headers, the CSRF token.
UPLOAD_ENVELOPE = 64 * 1024


# --- forms ---------------------------------------------------------------------------------


class ResultFileForm(FlaskForm):
    file = FileField(
        _l("Bank result file"),
        validators=[FileRequired(_l("Choose the bank's result file."))],
        description=(
            _l(
                "CSV with the columns payout_id,status,reason: status paid or failed, and the bank's reason for a"
                " failed payout. At most %(num)s MB.",
                num=RESULT_FILE_MAX_BYTES // (1024 * 1024),
            )
        ),
    )


class DebtorForm(FlaskForm):
    debtor_name = StringField(
        _l("Account holder"), validators=[Length(max=140)], description=_l("The tenant's name at its bank.")
    )
    debtor_iban = StringField(
        _l("IBAN"),
        validators=[Length(max=64)],
        description=_l("Stored encrypted; the pages show only its last four characters."),
    )
    debtor_bic = StringField(_l("BIC"), validators=[Length(max=20)], description=_l("8 or 11 letters and digits."))


# --- helpers -------------------------------------------------------------------------------


def _can_manage() -> bool:
    return current_user.is_authenticated and getattr(current_user, "role", None) in PAYOUT_MANAGERS


def _local(moment) -> str:
    return format_when(moment)


def _debtor() -> dict | None:
    """The account payouts are sent from, as the pages show it (the IBAN by its last four), or None."""
    settings = db.session.get(ClearingSettings, g.tenant.id)
    if settings is None or not settings.debtor_iban_encrypted:
        return None
    return {
        "name": settings.debtor_name,
        "iban_last4": crypto.decrypt(settings.debtor_iban_encrypted)[-4:],
        "bic": settings.debtor_bic,
    }


def _batch_runs() -> list[ClearingRun]:
    """The tenant's latest payout batch runs, newest first (settlement runs are on the clearing page)."""
    return list(
        db.session.execute(
            sa.select(ClearingRun)
            .where(ClearingRun.tenant_id == g.tenant.id, ClearingRun.kind == "payout_batch")
            .order_by(ClearingRun.created_at.desc(), ClearingRun.id.desc())
            .limit(RUNS_SHOWN)
        ).scalars()
    )


def _get_batch(batch_id: uuid.UUID) -> PayoutBatch:
    """A batch of this tenant; any other id (another tenant's, none) is 404."""
    batch = db.session.execute(
        sa.select(PayoutBatch).where(PayoutBatch.tenant_id == g.tenant.id, PayoutBatch.id == batch_id)
    ).scalar_one_or_none()
    if batch is None:
        abort(404)
    return batch


def _page(upload_form: ResultFileForm | None = None, problems: list[tuple[int, str]] | None = None, status: int = 200):
    runs = _batch_runs()
    own = listings.Scope(g.tenant.id, None, _zone(), email=current_user.email)
    statement, errors = listings.payout_batches(own, request.args)
    page = newest_first(statement, PayoutBatch, request.args.get("after"), PAGE_SIZE)
    typed = listings.typed(request.args, listings.BATCH_FILTERS)
    return theming.render(
        "console/payouts.html",
        pending=clearing_payouts.pending_summary(g.tenant.id),
        runs=runs,
        refresh=REFRESH_SECONDS if any(run.status in jobs.ACTIVE for run in runs) else None,
        page=page,
        paged=bool(request.args.get("after")),
        upload_form=upload_form or ResultFileForm(formdata=None),
        problems=problems or [],
        action_form=ActionForm(),
        can_manage=_can_manage(),
        debtor=_debtor(),
        zone=_zone().key,
        format_amount=format_amount,
        errors=errors,
        typed=typed,
        filters={key: value for key, value in typed.items() if key not in errors},
        **reporting.tools("console", "payout_batches", own),
    ), status


# --- the page ------------------------------------------------------------------------------


@bp.route("/payouts")
@tenant_role_required(*PAYOUT_READERS)
def payouts():
    return _page()


@bp.route("/payouts/batches", methods=["POST"])
@tenant_role_required(*PAYOUT_MANAGERS)
def create_payout_batches():
    back = redirect(url_for("console.payouts"))
    if not ActionForm().validate_on_submit():
        flash(EXPIRED, "error")
        return back
    before = jobs.active_run(g.tenant.id, "payout_batch")
    if before is None and not any(
        group.count > group.without_account for group in clearing_payouts.pending_summary(g.tenant.id)
    ):
        flash(_("Nothing to send: no merchant with a bank account has a pending payout."), "error")
        return back
    actor = current_actor()
    run = jobs.start_payout_batch(g.tenant.id, requested_by=actor.email, actor=actor)
    if before is not None and run.id == before.id:
        flash(_("A batch run is already in progress: it takes every payout that can be sent."), "error")
    else:
        flash(_("Batch run started: this page follows its progress."), "success")
    return back


@bp.url_value_preprocessor
def _result_file_limit(endpoint, values):
    """A result file may be larger than the app's request limit (MAX_CONTENT_LENGTH). The limit of
    its upload is raised here because URL value preprocessors run before every before_request
    function, CSRFProtect's too, which reads the form (and would refuse the body with a 413)."""
    if endpoint == "console.import_payout_results":
        request.max_content_length = RESULT_FILE_MAX_BYTES + UPLOAD_ENVELOPE


@bp.route("/payouts/results", methods=["POST"])
@tenant_role_required(*PAYOUT_MANAGERS)
def import_payout_results():
    form = ResultFileForm()
    if not form.validate_on_submit():
        note_expired(form)
        return _page(form, status=422)
    upload = form.file.data
    data = upload.read(RESULT_FILE_MAX_BYTES + 1)
    if not data:
        add_error(form.file, _("The file is empty: choose the bank's result file."))
    elif len(data) > RESULT_FILE_MAX_BYTES:
        add_error(form.file, _("The file is larger than %(size)s MB.", size=RESULT_FILE_MAX_BYTES // (1024 * 1024)))
    if form.file.errors:
        return _page(form, status=422)
    try:
        outcome = clearing_payouts.import_results(g.tenant.id, upload.filename or "", data, current_actor())
    except clearing_payouts.ResultFileError as exc:
        return _page(form, exc.problems, 422)
    record = outcome.file
    if outcome.already_imported:
        flash(
            _(
                "This file was already imported on %(time)s (%(zone)s); nothing changed.",
                time=_local(record.created_at),
                zone=_zone().key,
            ),
            "error",
        )
    else:
        flash(
            _(
                "%(filename)s: %(paid)s paid, %(failed)s failed (returned to the merchants' balances),"
                " %(unchanged)s unchanged.",
                filename=record.filename,
                paid=record.paid,
                failed=record.failed,
                unchanged=record.unchanged,
            ),
            "success",
        )
    return redirect(url_for("console.payouts"))


# --- a batch and its files -----------------------------------------------------------------


@bp.route("/payouts/batches/<uuid:batch_id>")
@tenant_role_required(*PAYOUT_READERS)
def payout_batch(batch_id: uuid.UUID):
    batch = _get_batch(batch_id)
    rows = db.session.execute(
        sa.select(Payout, Merchant.name, MerchantBankAccount.holder_name, MerchantBankAccount.account_last4)
        .join(Merchant, sa.and_(Merchant.tenant_id == Payout.tenant_id, Merchant.id == Payout.merchant_id))
        .outerjoin(
            MerchantBankAccount,
            sa.and_(
                MerchantBankAccount.tenant_id == Payout.tenant_id,
                MerchantBankAccount.merchant_id == Payout.merchant_id,
            ),
        )
        .where(Payout.tenant_id == g.tenant.id, Payout.batch_id == batch.id)
        .order_by(Payout.created_at, Payout.id)
    ).all()
    return theming.render(
        "console/payout_batch.html",
        batch=batch,
        rows=rows,
        zone=_zone().key,
        format_amount=format_amount,
    )


def _download(batch: PayoutBatch, body: str | bytes, extension: str, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{batch.reference}.{extension}"'
    response.headers["Cache-Control"] = "no-store"  # whole account numbers
    return response


@bp.route("/payouts/batches/<uuid:batch_id>/file.csv")
@tenant_role_required(*PAYOUT_READERS)
def payout_batch_csv(batch_id: uuid.UUID):
    batch = _get_batch(batch_id)
    return _download(batch, clearing_payouts.batch_csv(batch), "csv", "text/csv")


@bp.route("/payouts/batches/<uuid:batch_id>/file.xml")
@tenant_role_required(*PAYOUT_READERS)
def payout_batch_xml(batch_id: uuid.UUID):
    batch = _get_batch(batch_id)
    try:
        xml = clearing_payouts.batch_pain001(batch)
    except clearing_payouts.BatchFileError as exc:
        flash(_("No pain.001 file for %(reference)s: %(exc)s", reference=batch.reference, exc=str(exc)), "error")
        return redirect(url_for("console.payout_batch", batch_id=batch.id))
    return _download(batch, xml, "xml", "application/xml")


# --- the account payouts are sent from -----------------------------------------------------


def _settings_page(form: DebtorForm, status: int = 200):
    return theming.render("console/payout_settings.html", form=form, debtor=_debtor(), can_manage=_can_manage()), status


@bp.route("/payouts/settings", methods=["GET", "POST"])
@tenant_role_required(*PAYOUT_READERS)
def payout_settings():
    if request.method == "GET":
        debtor = _debtor()
        # The stored IBAN is never put back into the form: changing the account means typing it.
        data = {"debtor_name": debtor["name"], "debtor_bic": debtor["bic"]} if debtor else None
        return _settings_page(DebtorForm(data=data))
    if not _can_manage():
        abort(403)
    form = DebtorForm()
    if not form.validate_on_submit():
        note_expired(form)
        return _settings_page(form, 422)
    try:
        clearing_payouts.set_debtor(
            g.tenant.id,
            name=form.debtor_name.data or "",
            iban=form.debtor_iban.data or "",
            bic=form.debtor_bic.data or "",
            actor=current_actor(),
        )
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _settings_page(form, 422)
    db.session.commit()
    debtor = _debtor()
    flash(
        _(
            "Payouts are sent from %(name)s, IBAN …%(iban_last4)s (%(bic)s): the pain.001 files name this account"
            " from now on.",
            name=debtor["name"],
            iban_last4=debtor["iban_last4"],
            bic=debtor["bic"],
        ),
        "success",
    )
    return redirect(url_for("console.payout_settings"))


# --- a merchant's bank account --------------------------------------------------------------


def merchant_payout_context(merchant: Merchant) -> dict:
    """What the console's merchant page shows about payouts: its bank account (read only, masked)."""
    return {"bank_account": clearing_payouts.bank_account_of(g.tenant.id, merchant.id)}
