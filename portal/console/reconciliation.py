"""Console: reconciliation. Statements uploaded (a channel account's or the bank's: CSV read with
the source's saved column mapping, MT940, CAMT.053, Alipay's and WeChat Pay's bills) or fetched
through a channel's adapter; their imports, each a clearing run (progress, counts, the line a
refused file went wrong on, its lines and the records they matched); the CSV column mapping of
each source; and the suspense items reconciliation could not explain, with their workflow
(assign, comment, resolve by a match or by an adjusting entry, a write-off requested by one
person and approved by another) and the report of open suspense by age.

Admins, operators and finance read; admins and finance upload, fetch, save mappings and work the
suspense items. The use cases in `clearing.reconciliation` and `clearing.suspense` validate,
write and audit; `store_upload`, `fetch_statement` and `jobs.start_import` commit themselves,
these views commit the rest. An item's amount is shown as the difference between the statement
and the platform's records, in words ("statement only: +7.00 USD").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import Length

from clearing import jobs, listings
from clearing import reconciliation as clearing_reconciliation
from clearing import suspense as clearing_suspense
from clearing.models import (
    IMPORT_STATUSES,
    LINE_STATUSES,
    ClearingRun,
    StatementImport,
    StatementLine,
    SuspenseItem,
)
from clearing.statement_formats import FORMATS as STATEMENT_FORMATS
from clearing.statement_formats import ColumnMapping
from core.db import db
from core.money import MoneyError, normalise_currency
from payments.channels import ADAPTERS
from payments.channels.base import ChannelError
from payments.models import ChannelAccount
from portal import reporting, theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.console.fees import _zone
from portal.forms import ActionForm, add_error, field_error, labelled, note_expired
from portal.i18n import format_amount, format_when
from portal.pagination import Page, newest_first, oldest_first
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import AuditEvent

RECONCILIATION_READERS = ("admin", "operator", "finance")
RECONCILIATION_MANAGERS = ("admin", "finance")
PAGE_SIZE = 25
LINES_PAGE_SIZE = 50
REFRESH_SECONDS = 3
STATEMENT_MAX_BYTES = clearing_reconciliation.MAX_STATEMENT_BYTES
# The multipart request around a statement: boundaries, part headers, the CSRF token, the selects.
UPLOAD_ENVELOPE = 64 * 1024
BANK = "bank"  # the mapping form's source key of the tenant's bank
BANK_SOURCES = {"bank-live": True, "bank-test": False}  # the upload's source value -> livemode
# What may be uploaded: every format but `channel`, which only a fetch through the adapter writes.
UPLOAD_FORMATS = {
    "csv": _l("CSV (read with the source's saved column mapping)"),
    "mt940": _l("MT940 (SWIFT bank statement)"),
    "camt053": _l("CAMT.053 (ISO 20022 bank statement, XML)"),
    "alipay": _l("Alipay merchant bill (业务明细, CSV)"),
    "wechat": _l("WeChat Pay merchant bill (CSV)"),
}
ADJUSTMENT_ACCOUNTS = {
    "channel_receivable": _l("Channel receivable (what the channel owes)"),
    "bank": _l("Bank"),
    "channel_fees": _l("Channel fees"),
    "tenant_revenue": _l("Tenant revenue"),
}
RECORD_TYPES = {"payment": _l("Payment (pi_…)"), "refund": _l("Refund (re_…)"), "payout": _l("Payout (po_…)")}
SUSPENSE_FILTERS = listings.SUSPENSE_FILTERS
# The suspense list's status filter: the unresolved ones unless asked otherwise.
STATUS_CHOICES = {
    "unresolved": _l("Unresolved (open or waiting for write-off approval)"),
    "open": _l("open"),
    "pending_write_off": _l("pending write off"),
    "resolved": _l("resolved"),
    "written_off": _l("written off"),
    "all": _l("All"),
}
KIND_LABELS = {"long": _l("statement only"), "short": _l("platform only"), "mismatch": _l("amounts differ")}


# --- forms ---------------------------------------------------------------------------------


class UploadForm(FlaskForm):
    source = SelectField(
        _l("Source"), description=_l("The channel account the statement is from, or the tenant's bank.")
    )
    format = SelectField(_l("Format"), choices=labelled(UPLOAD_FORMATS))
    file = FileField(
        _l("Statement file"),
        validators=[FileRequired(_l("Choose the statement file."))],
        description=(
            _l(
                "At most %(num)s MB. A file with any bad line imports nothing; the same file twice is imported once.",
                num=STATEMENT_MAX_BYTES // (1024 * 1024),
            )
        ),
    )


class FetchForm(FlaskForm):
    channel_account_id = SelectField(_l("Channel account"))
    day = StringField(
        _l("Day"),
        validators=[Length(max=20)],
        description=_l("The channel's day (UTC) whose statement to download; yesterday unless you choose another."),
    )


class MappingForm(FlaskForm):
    """One source's CSV column mapping (built with the source as its prefix: one form per source)."""

    reference = StringField(
        _l("Reference column"),
        validators=[Length(max=100)],
        description=_l("The channel's or bank's reference of a line."),
    )
    amount = StringField(_l("Amount column"), validators=[Length(max=100)], description=_l("Negative for money out."))
    date = StringField(_l("Date column"), validators=[Length(max=100)])
    date_format = StringField(
        _l("Date format"),
        validators=[Length(max=40)],
        description=_l("%Y-%m-%d reads 2026-03-31, %d.%m.%Y reads 31.03.2026, %m/%d/%Y reads 03/31/2026."),
    )
    currency = StringField(
        _l("Currency column"), validators=[Length(max=100)], description=_l("Empty when every line is in one currency.")
    )
    fixed_currency = StringField(
        _l("Currency of every line"),
        validators=[Length(max=10)],
        description=_l("Without a currency column: the statement's one currency, e.g. USD."),
    )
    type = StringField(
        _l("Type column"),
        validators=[Length(max=100)],
        description=_l("Optional: payment, refund, payout, fee… Without it, positive amounts are payments."),
    )
    description = StringField(_l("Description column"), validators=[Length(max=100)], description=_l("Optional."))


class AssignForm(FlaskForm):
    assignee = StringField(
        _l("Assignee"), validators=[Length(max=320)], description=_l("The e-mail of who looks into it; empty: nobody.")
    )


class CommentForm(FlaskForm):
    body = TextAreaField(_l("Comment"), validators=[Length(max=2000)])


class MatchForm(FlaskForm):
    record_type = SelectField(_l("Record"), choices=labelled(RECORD_TYPES))
    record_id = StringField(
        _l("Record id"), validators=[Length(max=40)], description=_l("The payment, refund or payout this item is.")
    )
    match_note = StringField(
        _l("Reason"), validators=[Length(max=1000)], description=_l("Goes into the journal and audit.")
    )


class AdjustForm(FlaskForm):
    purpose = SelectField(_l("Account"), choices=labelled({"": _l("Choose the account"), **ADJUSTMENT_ACCOUNTS}))
    adjust_note = StringField(
        _l("Reason"), validators=[Length(max=1000)], description=_l("Goes into the journal and audit.")
    )


class WriteOffForm(FlaskForm):
    write_off_note = StringField(
        _l("Reason"), validators=[Length(max=1000)], description=_l("Someone other than you approves the write-off.")
    )


class RejectForm(FlaskForm):
    reject_note = StringField(_l("Reason"), validators=[Length(max=1000)], description=_l("The item is open again."))


# --- helpers -------------------------------------------------------------------------------


def _can_manage() -> bool:
    return current_user.is_authenticated and getattr(current_user, "role", None) in RECONCILIATION_MANAGERS


def _local(moment) -> str:
    return format_when(moment)


def _field_error(form: FlaskForm, exc: InvalidInput, fields: dict[str, str] | None = None) -> None:
    """A use case's error at the form's field (`fields` renames the use case's field names)."""
    field_error(form, InvalidInput(exc.message, (fields or {}).get(exc.field or "", exc.field)))


def _accounts() -> list[ChannelAccount]:
    return list(
        db.session.execute(
            sa.select(ChannelAccount)
            .where(ChannelAccount.tenant_id == g.tenant.id)
            .order_by(ChannelAccount.name, ChannelAccount.id)
        ).scalars()
    )


def _offers_statements(account: ChannelAccount) -> bool:
    adapter = ADAPTERS.get(account.type)
    return adapter is not None and adapter.capabilities.statements


def _account_label(account: ChannelAccount) -> str:
    return f"{account.name} ({account.type}, {account.mode}, {account.currency})"


def _source_names() -> dict[uuid.UUID | None, str]:
    return {account.id: account.name for account in _accounts()}


def _source_of(names: dict, channel_account_id: uuid.UUID | None, livemode: bool) -> str:
    if channel_account_id is None:
        return _("Bank (live)") if livemode else _("Bank (test)")
    return names.get(channel_account_id, "a removed channel account")


def _upload_dir() -> Path:
    return Path(current_app.config["UPLOAD_DIR"])


def _runs(run_ids) -> dict[uuid.UUID, ClearingRun]:
    ids = {run_id for run_id in run_ids if run_id}
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(ClearingRun).where(ClearingRun.tenant_id == g.tenant.id, ClearingRun.id.in_(ids))
    ).scalars()
    return {run.id: run for run in rows}


def _state(row: StatementImport, run: ClearingRun | None) -> tuple[str, str | None]:
    """What an import is doing, as the page says it: queued, running, succeeded or failed, and why
    it failed. The import row knows queued and its end; the run knows that it is running, and how a
    run that broke (not for the file's content) ended."""
    if row.status in ("succeeded", "failed"):
        return row.status, (f"line {row.error_line}: {row.error}" if row.error_line else row.error)
    if run is None:
        return row.status, None
    if run.status == "failed":
        return "failed", run.error
    return ("running" if run.status == "running" else "queued"), None


def _active_imports() -> bool:
    """Whether any import of the tenant is queued or running (the pages then refresh themselves)."""
    return (
        db.session.execute(
            sa.select(StatementImport.id)
            .join(
                ClearingRun,
                sa.and_(ClearingRun.tenant_id == StatementImport.tenant_id, ClearingRun.id == StatementImport.run_id),
            )
            .where(
                StatementImport.tenant_id == g.tenant.id,
                StatementImport.status.in_(jobs.ACTIVE),
                ClearingRun.status.in_(jobs.ACTIVE),
            )
            .limit(1)
        ).first()
        is not None
    )


def _get_import(import_id: uuid.UUID) -> StatementImport:
    """An import of this tenant; any other id (another tenant's, none) is 404."""
    row = db.session.execute(
        sa.select(StatementImport).where(StatementImport.tenant_id == g.tenant.id, StatementImport.id == import_id)
    ).scalar_one_or_none()
    if row is None:
        abort(404)
    return row


def _get_item(item_id: uuid.UUID) -> SuspenseItem:
    """A suspense item of this tenant; any other id (another tenant's, none) is 404."""
    item = db.session.execute(
        sa.select(SuspenseItem).where(SuspenseItem.tenant_id == g.tenant.id, SuspenseItem.id == item_id)
    ).scalar_one_or_none()
    if item is None:
        abort(404)
    return item


def _signed(amount: int, currency: str) -> str:
    return ("+" if amount > 0 else "") + format_amount(amount, currency)


def _difference(item: SuspenseItem) -> str:
    """The item's amount in words, as the difference between the statement and the platform.
    `item.amount` is what the item put on suspense (debit-positive): a statement-only line of +X is
    -X, a platform-only record of X is +X, a mismatch is the platform's amount less the statement's."""
    if item.kind == "long":
        return _("statement only: %(amount)s", amount=_signed(-item.amount, item.currency))
    if item.kind == "short":
        return _("platform only: %(amount)s", amount=_signed(item.amount, item.currency))
    if not item.amount:
        return _("the statement's currency differs from the platform's")
    amount = format_amount(abs(item.amount), item.currency)
    if item.amount < 0:
        return _("statement %(amount)s more than the platform", amount=amount)
    return _("statement %(amount)s less than the platform", amount=amount)


def _age(item: SuspenseItem, now: datetime) -> int:
    return ((item.resolved_at or now) - item.opened_at).days


def _day(text: str) -> date:
    """'2026-03-31' -> date; anything else is a ValueError with the message for the field."""
    text = (text or "").strip()
    if not text:
        raise ValueError(_("Give the day, like 2026-03-31."))
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(_("%(text)s is not a day: use the form 2026-03-31.", text=repr(text))) from None
    if day > datetime.now(UTC).date():
        raise ValueError(_("That day has not begun yet: the channel has no statement for it."))
    return day


# --- the reconciliation page: upload, fetch, the imports --------------------------------------


def _upload_form(fresh: bool = False) -> UploadForm:
    """The upload form: as posted, or `fresh` (nothing chosen) for a page that shows another form's errors."""
    form = UploadForm(formdata=None) if fresh else UploadForm()
    form.source.choices = [
        *[(str(account.id), _account_label(account)) for account in _accounts()],
        ("bank-live", _("Bank (live)")),
        ("bank-test", _("Bank (test)")),
    ]
    return form


def _fetch_form(fresh: bool = False) -> FetchForm:
    """The fetch form: as posted, or `fresh` with yesterday (UTC, the channels' days) as its day."""
    if fresh:
        form = FetchForm(formdata=None, data={"day": (datetime.now(UTC).date() - timedelta(days=1)).isoformat()})
    else:
        form = FetchForm()
    form.channel_account_id.choices = [
        (str(account.id), _account_label(account)) for account in _accounts() if _offers_statements(account)
    ]
    return form


def _page(upload_form: UploadForm | None = None, fetch_form: FetchForm | None = None, status: int = 200):
    own = listings.Scope(g.tenant.id, None, _zone(), email=current_user.email)
    statement, errors = listings.statement_imports(own, request.args)
    page = newest_first(statement, StatementImport, request.args.get("after"), PAGE_SIZE)
    runs = _runs(row.run_id for row in page.items)
    names = _source_names()
    rows = [
        {
            "import": row,
            "run": runs.get(row.run_id),
            "state": _state(row, runs.get(row.run_id)),
            "source": _source_of(names, row.channel_account_id, row.livemode),
        }
        for row in page.items
    ]
    return theming.render(
        "console/reconciliation.html",
        upload_form=upload_form if upload_form is not None else _upload_form(fresh=True),
        fetch_form=fetch_form if fetch_form is not None else _fetch_form(fresh=True),
        page=page,
        rows=rows,
        paged=bool(request.args.get("after")),
        refresh=REFRESH_SECONDS if _active_imports() else None,
        can_manage=_can_manage(),
        zone=_zone().key,
        errors=errors,
        typed=listings.typed(request.args, listings.IMPORT_FILTERS),
        filters={
            key: value
            for key, value in listings.typed(request.args, listings.IMPORT_FILTERS).items()
            if key not in errors
        },
        statuses=IMPORT_STATUSES,
        formats=STATEMENT_FORMATS,
        **reporting.tools("console", "statement_imports", own),
    ), status


@bp.route("/reconciliation")
@tenant_role_required(*RECONCILIATION_READERS)
def reconciliation():
    return _page()


@bp.url_value_preprocessor
def _statement_limit(endpoint, values):
    """A statement may be far larger than the app's request limit (MAX_CONTENT_LENGTH). As for the
    payouts' result file, the limit of its upload is raised here: URL value preprocessors run before
    every before_request function, CSRFProtect's too, which reads the form (and would refuse the body
    with a 413)."""
    if endpoint == "console.upload_statement":
        request.max_content_length = STATEMENT_MAX_BYTES + UPLOAD_ENVELOPE


def _queued(stored: clearing_reconciliation.Stored, what: str):
    """After a statement is stored: start its import (or say it was already imported) and go to it."""
    row = stored.import_
    if stored.already_imported:
        run = db.session.get(ClearingRun, (g.tenant.id, row.run_id)) if row.run_id else None
        state, error = _state(row, run)
        if state == "failed":
            # The same file again, after a refusal: its import is tried again (with the mapping as it is now).
            jobs.start_import(g.tenant.id, row.id, requested_by=current_actor().email)
            flash(
                _(
                    "%(what)s was imported before and refused (%(error)s); it is imported again now.",
                    what=what,
                    error=error,
                ),
                "error",
            )
        else:
            flash(
                _(
                    "%(what)s was already imported on %(time)s (%(zone)s) as %(filename)s: nothing was imported"
                    " again. Here is that import.",
                    what=what,
                    time=_local(row.created_at),
                    zone=_zone().key,
                    filename=row.filename,
                ),
                "error",
            )
        return redirect(url_for("console.statement_import", import_id=row.id))
    jobs.start_import(g.tenant.id, row.id, requested_by=current_actor().email)
    flash(_("%(what)s is stored and its import is queued: this page follows its progress.", what=what), "success")
    return redirect(url_for("console.statement_import", import_id=row.id))


@bp.route("/reconciliation/imports", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def upload_statement():
    form = _upload_form()
    if not form.validate_on_submit():
        note_expired(form)
        return _page(upload_form=form, status=422)
    source = form.source.data
    if source in BANK_SOURCES:
        account_id, livemode = None, BANK_SOURCES[source]
    else:
        account_id, livemode = uuid.UUID(source), None
    upload = form.file.data
    try:
        stored = clearing_reconciliation.store_upload(
            g.tenant.id,
            upload.stream,
            filename=upload.filename or "",
            fmt=form.format.data,
            channel_account_id=account_id,
            livemode=livemode,
            upload_dir=_upload_dir(),
            actor=current_actor(),
            max_bytes=STATEMENT_MAX_BYTES,
        )
    except InvalidInput as exc:
        db.session.rollback()
        _field_error(form, exc, {"channel_account_id": "source", "livemode": "source"})
        return _page(upload_form=form, status=422)
    return _queued(stored, upload.filename or _("The file"))


@bp.route("/reconciliation/fetch", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def fetch_statement():
    form = _fetch_form()
    if not form.validate_on_submit():
        note_expired(form)
        return _page(fetch_form=form, status=422)
    try:
        day = _day(form.day.data)
    except ValueError as exc:
        add_error(form.day, str(exc))
        return _page(fetch_form=form, status=422)
    account_id = uuid.UUID(form.channel_account_id.data)
    try:
        stored = clearing_reconciliation.fetch_statement(
            g.tenant.id, account_id, day, upload_dir=_upload_dir(), actor=current_actor()
        )
    except InvalidInput as exc:
        db.session.rollback()
        _field_error(form, exc)
        return _page(fetch_form=form, status=422)
    except ChannelError as exc:
        db.session.rollback()
        form.form_errors.append(
            _(
                "The channel did not deliver the statement of %(day)s: %(message)s. Nothing was imported; try again"
                " later.",
                day=day.isoformat(),
                message=exc.message,
            )
        )
        return _page(fetch_form=form, status=502)
    name = db.session.get(ChannelAccount, (g.tenant.id, account_id)).name
    return _queued(stored, _("The statement of %(day)s from %(name)s", day=day.isoformat(), name=name))


# --- an import and its lines -----------------------------------------------------------------


def _lines(row: StatementImport, args) -> tuple[Page, dict[str, str], dict[str, str]]:
    """One page of the import's lines in file order, narrowed by status."""
    errors: dict[str, str] = {}
    statement = sa.select(StatementLine).where(
        StatementLine.tenant_id == g.tenant.id, StatementLine.import_id == row.id
    )
    status = (args.get("status") or "").strip()
    if status and status not in LINE_STATUSES:
        errors["status"] = _("%(status)s is not a line status.", status=repr(status))
    elif status:
        statement = statement.where(StatementLine.status == status)
    cursor = args.get("after")
    invalid = False
    if cursor:
        if cursor.isdigit() and len(cursor) < 10:
            statement = statement.where(StatementLine.line_no > int(cursor))
        else:
            invalid = True
    found = (
        db.session.execute(statement.order_by(StatementLine.line_no, StatementLine.id).limit(LINES_PAGE_SIZE + 1))
        .scalars()
        .all()
    )
    items = list(found[:LINES_PAGE_SIZE])
    more = len(found) > LINES_PAGE_SIZE
    page = Page(items, str(items[-1].line_no) if more and items else None, cursor_invalid=invalid)
    filters = {"status": status} if status and not errors else {}
    return page, errors, filters


@bp.route("/reconciliation/imports/<uuid:import_id>")
@tenant_role_required(*RECONCILIATION_READERS)
def statement_import(import_id: uuid.UUID):
    row = _get_import(import_id)
    run = db.session.get(ClearingRun, (g.tenant.id, row.run_id)) if row.run_id else None
    state, error = _state(row, run)
    page, errors, filters = _lines(row, request.args)
    line_ids = [line.id for line in page.items]
    items = (
        dict(
            db.session.execute(
                sa.select(SuspenseItem.statement_line_id, SuspenseItem.id).where(
                    SuspenseItem.tenant_id == g.tenant.id, SuspenseItem.statement_line_id.in_(line_ids)
                )
            ).all()
        )
        if line_ids
        else {}
    )
    return theming.render(
        "console/statement_import.html",
        row=row,
        run=run,
        state=state,
        error=error,
        source=_source_of(_source_names(), row.channel_account_id, row.livemode),
        format_label=UPLOAD_FORMATS.get(row.format, "Fetched from the channel"),
        page=page,
        errors=errors,
        filters=filters,
        typed={"status": (request.args.get("status") or "").strip()},
        statuses=LINE_STATUSES,
        suspense_items=items,
        paged=bool(request.args.get("after")),
        refresh=REFRESH_SECONDS if state in jobs.ACTIVE else None,
        zone=_zone().key,
        format_amount=format_amount,
    )


# --- CSV column mappings ------------------------------------------------------------------


def _mapping_sources() -> list[dict]:
    """Every source a CSV statement may come from: each channel account, then the bank."""
    sources = [
        {"key": str(account.id), "account_id": account.id, "name": _account_label(account)} for account in _accounts()
    ]
    return [*sources, {"key": BANK, "account_id": None, "name": _("Bank (live and test)")}]


def _mappings_page(failed: tuple[str, MappingForm] | None = None, status: int = 200):
    """A form per source, filled with its saved mapping (the one that failed as it was typed)."""
    forms = []
    for source in _mapping_sources():
        saved = clearing_reconciliation.mapping_for(g.tenant.id, source["account_id"])
        if failed and failed[0] == source["key"]:
            form = failed[1]
        else:
            data = {"date_format": "%Y-%m-%d"}
            if saved:
                data = {key: value or "" for key, value in saved.to_json().items()}
            form = MappingForm(prefix=source["key"], formdata=None, data=data)
        forms.append({**source, "saved": saved is not None, "form": form})
    return theming.render("console/reconciliation_mappings.html", sources=forms, can_manage=_can_manage()), status


def _mapping_from(form: MappingForm) -> ColumnMapping | None:
    """The typed mapping, or None with the problems at their fields (what the use case does not check)."""

    def text(field) -> str:
        return (field.data or "").strip()

    fixed = text(form.fixed_currency)
    if fixed:
        try:
            fixed = normalise_currency(fixed)
        except MoneyError as exc:
            add_error(form.fixed_currency, str(exc))
    date_format = text(form.date_format) or "%Y-%m-%d"
    example = datetime(2026, 3, 31)
    try:
        readable = datetime.strptime(example.strftime(date_format), date_format) == example
    except ValueError:
        readable = False
    if not readable:
        add_error(
            form.date_format,
            _(
                "%(format)s does not read a whole date back: give the year, month and day, like %%Y-%%m-%%d.",
                format=repr(date_format),
            ),
        )
    if form.errors:
        return None
    return ColumnMapping(
        reference=text(form.reference),
        amount=text(form.amount),
        date=text(form.date),
        currency=text(form.currency) or None,
        fixed_currency=fixed or None,
        type=text(form.type) or None,
        description=text(form.description) or None,
        date_format=date_format,
    )


@bp.route("/reconciliation/mappings", methods=["GET", "POST"])
@tenant_role_required(*RECONCILIATION_READERS)
def statement_mappings():
    if request.method == "GET":
        return _mappings_page()
    if not _can_manage():
        abort(403)
    key = request.form.get("source", "")
    source = next((s for s in _mapping_sources() if s["key"] == key), None)
    if source is None:
        abort(404)  # no source of this tenant (another tenant's channel account, or none)
    form = MappingForm(prefix=key)
    if not form.validate_on_submit():
        note_expired(form)
        return _mappings_page((key, form), 422)
    mapping = _mapping_from(form)
    if mapping is None:
        return _mappings_page((key, form), 422)
    try:
        clearing_reconciliation.save_mapping(g.tenant.id, source["account_id"], mapping, current_actor())
    except InvalidInput as exc:
        db.session.rollback()
        field_error(form, exc)
        return _mappings_page((key, form), 422)
    db.session.commit()
    flash(
        _("CSV column mapping of %(name)s saved: its next CSV statements are read with it.", name=source["name"]),
        "success",
    )
    return redirect(url_for("console.statement_mappings") + f"#mapping-{key}")


# --- suspense: the list and the report ------------------------------------------------------


def _suspense_scope() -> listings.Scope:
    return listings.Scope(g.tenant.id, None, _zone(), email=current_user.email)


@bp.route("/suspense")
@tenant_role_required(*RECONCILIATION_READERS)
def suspense():
    own = _suspense_scope()
    statement, errors = listings.suspense_items(own, request.args)
    # The filters that could be used, for the pager's links ("unresolved" is the default).
    filters = {key: value for key, value in listings.typed(request.args, SUSPENSE_FILTERS).items() if key not in errors}
    if filters.get("status") == "unresolved":
        del filters["status"]
    page = oldest_first(statement, SuspenseItem, SuspenseItem.opened_at, request.args.get("after"), PAGE_SIZE)
    now = datetime.now(UTC)
    names = _source_names()
    rows = [
        {
            "item": item,
            "age": _age(item, now),
            "difference": _difference(item),
            "source": _source_of(names, item.channel_account_id, item.livemode),
        }
        for item in page.items
    ]
    typed = {key: (request.args.get(key) or "").strip() for key in SUSPENSE_FILTERS}
    typed["status"] = typed["status"] or "unresolved"
    return theming.render(
        "console/suspense.html",
        rows=rows,
        page=page,
        report=clearing_suspense.open_by_age(g.tenant.id, now),
        filters=filters,
        typed=typed,
        errors=errors,
        status_choices=STATUS_CHOICES,
        kinds=KIND_LABELS,
        paged=bool(request.args.get("after")),
        zone=_zone().key,
        format_amount=format_amount,
        **reporting.tools("console", "suspense", own),
    )


# --- suspense: an item and its workflow ------------------------------------------------------


def _kept(failed: dict[str, FlaskForm], name: str, form_class, data: dict | None = None) -> FlaskForm:
    """The form that was posted and refused (as typed, with its errors), or a fresh one."""
    return failed[name] if name in failed else form_class(formdata=None, data=data)


def _item_page(item: SuspenseItem, failed: dict[str, FlaskForm] | None = None, status: int = 200):
    failed = failed or {}
    line = line_import = None
    if item.statement_line_id:
        line = db.session.get(StatementLine, (g.tenant.id, item.statement_line_id))
        line_import = db.session.get(StatementImport, (g.tenant.id, line.import_id)) if line else None
    events = (
        db.session.execute(
            sa.select(AuditEvent)
            .where(
                AuditEvent.tenant_id == g.tenant.id,
                AuditEvent.object_type == "suspense_item",
                AuditEvent.object_id == str(item.id),
            )
            .order_by(AuditEvent.created_at, AuditEvent.id)
        )
        .scalars()
        .all()
    )
    can_manage = _can_manage()
    return theming.render(
        "console/suspense_item.html",
        item=item,
        difference=_difference(item),
        age=_age(item, datetime.now(UTC)),
        kind_label=KIND_LABELS[item.kind],
        source=_source_of(_source_names(), item.channel_account_id, item.livemode),
        line=line,
        line_import=line_import,
        comments=clearing_suspense.comments(g.tenant.id, item.id),
        events=events,
        can_manage=can_manage,
        # What refused the posted form as a whole (the item changed meanwhile, a second person is needed, an
        # expired form): shown above the forms, since the form itself may no longer be offered.
        refused=[error for form in failed.values() for error in form.form_errors],
        is_open=item.status in clearing_suspense.OPEN,
        can_approve=can_manage and item.status == "pending_write_off" and current_user.email != item.requested_by,
        assign_form=_kept(failed, "assign", AssignForm, {"assignee": item.assignee or ""}),
        comment_form=_kept(failed, "comment", CommentForm),
        match_form=_kept(failed, "match", MatchForm),
        adjust_form=_kept(failed, "adjust", AdjustForm),
        write_off_form=_kept(failed, "write_off", WriteOffForm),
        reject_form=_kept(failed, "reject", RejectForm),
        approve_form=_kept(failed, "approve", ActionForm),
        adjustment_accounts=ADJUSTMENT_ACCOUNTS,
        zone=_zone().key,
        format_amount=format_amount,
    ), status


@bp.route("/suspense/<uuid:item_id>")
@tenant_role_required(*RECONCILIATION_READERS)
def suspense_item(item_id: uuid.UUID):
    return _item_page(_get_item(item_id))


def _work(
    item_id: uuid.UUID,
    name: str,
    form: FlaskForm,
    step: Callable[[FlaskForm], str],
    fields: dict[str, str] | None = None,
):
    """One step of an item's workflow: the form checked, the use case called (it raises at a
    field), committed, and back to the item with what happened; or the page again with the form as
    typed and its errors (422)."""
    item = _get_item(item_id)
    if not form.validate_on_submit():
        note_expired(form)
        return _item_page(item, {name: form}, 422)
    try:
        message = step(form)
    except InvalidInput as exc:
        db.session.rollback()
        _field_error(form, exc, fields)
        return _item_page(_get_item(item_id), {name: form}, 422)
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("console.suspense_item", item_id=item.id))


@bp.route("/suspense/<uuid:item_id>/assign", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def assign_suspense_item(item_id: uuid.UUID):
    def step(form: AssignForm) -> str:
        item = clearing_suspense.assign(g.tenant.id, item_id, form.assignee.data, current_actor())
        return (
            _("Assigned to %(who)s.", who=item.assignee) if item.assignee else _("Nobody is assigned to the item now.")
        )

    return _work(item_id, "assign", AssignForm(), step)


@bp.route("/suspense/<uuid:item_id>/comments", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def comment_suspense_item(item_id: uuid.UUID):
    def step(form: CommentForm) -> str:
        clearing_suspense.add_comment(g.tenant.id, item_id, form.body.data or "", current_actor())
        return _("Comment added.")

    return _work(item_id, "comment", CommentForm(), step)


@bp.route("/suspense/<uuid:item_id>/match", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def match_suspense_item(item_id: uuid.UUID):
    def step(form: MatchForm) -> str:
        item = clearing_suspense.resolve_by_match(
            g.tenant.id,
            item_id,
            form.record_type.data,
            form.record_id.data or "",
            form.match_note.data or "",
            current_actor(),
        )
        return _(
            "Resolved: the item is %(type)s %(id)s, already in the books; suspense is cleared.",
            type=item.record_type,
            id=item.record_id,
        )

    return _work(item_id, "match", MatchForm(), step, {"note": "match_note"})


@bp.route("/suspense/<uuid:item_id>/adjust", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def adjust_suspense_item(item_id: uuid.UUID):
    def step(form: AdjustForm) -> str:
        clearing_suspense.resolve_by_adjustment(
            g.tenant.id, item_id, form.purpose.data or "", form.adjust_note.data or "", current_actor()
        )
        return _(
            "Resolved by an adjusting entry to %(account)s; suspense is cleared.",
            account=ADJUSTMENT_ACCOUNTS[form.purpose.data],
        )

    return _work(item_id, "adjust", AdjustForm(), step, {"note": "adjust_note"})


@bp.route("/suspense/<uuid:item_id>/write-off", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def request_suspense_write_off(item_id: uuid.UUID):
    def step(form: WriteOffForm) -> str:
        clearing_suspense.request_write_off(g.tenant.id, item_id, form.write_off_note.data or "", current_actor())
        return _("Write-off requested: someone other than you approves or rejects it.")

    return _work(item_id, "write_off", WriteOffForm(), step, {"note": "write_off_note"})


@bp.route("/suspense/<uuid:item_id>/write-off/approve", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def approve_suspense_write_off(item_id: uuid.UUID):
    def step(form: ActionForm) -> str:
        item = clearing_suspense.approve_write_off(g.tenant.id, item_id, current_actor())
        return _("Written off (%(amount)s), as %(who)s asked.", amount=_difference(item), who=item.requested_by)

    return _work(item_id, "approve", ActionForm(), step)


@bp.route("/suspense/<uuid:item_id>/write-off/reject", methods=["POST"])
@tenant_role_required(*RECONCILIATION_MANAGERS)
def reject_suspense_write_off(item_id: uuid.UUID):
    def step(form: RejectForm) -> str:
        clearing_suspense.reject_write_off(g.tenant.id, item_id, form.reject_note.data or "", current_actor())
        return _("Write-off rejected: the item is open again.")

    return _work(item_id, "reject", RejectForm(), step, {"note": "reject_note"})
