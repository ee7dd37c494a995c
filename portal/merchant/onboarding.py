"""Merchant dashboard: onboarding. The business profile, the KYC documents, submitting them for
review, and where the review stands (with the reviewer's message).

Every user of the merchant reads the page and the documents; only the owner changes them and
submits. Changes are possible while the application is a draft or changes are requested.
"""

from __future__ import annotations

import uuid

from flask import abort, current_app, flash, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional

from core.money import to_major
from onboarding import documents, review
from onboarding import profile as profiles
from portal import theming
from portal.access import merchant_role_required
from portal.forms import ActionForm, field_error, note_expired
from portal.kyc_files import send_document
from portal.merchant import bp
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import MERCHANT_ROLES

UPLOAD_ENVELOPE = 64 * 1024  # the multipart form around the file: boundaries, the CSRF token, the kind

DOCUMENT_KIND_LABELS = {
    "business_licence": _l("Business licence"),
    "representative_id": _l("ID of the legal representative"),
    "bank_proof": _l("Bank account proof"),
    "other": _l("Other"),
}
STATUS_LABELS = {
    "draft": _l("Draft"),
    "submitted": _l("Submitted, waiting for review"),
    "changes_requested": _l("Changes requested"),
    "approved": _l("Approved"),
    "rejected": _l("Rejected"),
}


class ProfileForm(FlaskForm):
    legal_name = StringField(_l("Legal name"), validators=[Optional(), Length(max=200)])
    registration_number = StringField(
        _l("Registration number"),
        validators=[Optional(), Length(max=64)],
        description=_l("As on the business licence (company register, unified social credit code)."),
    )
    legal_representative = StringField(_l("Legal representative"), validators=[Optional(), Length(max=200)])
    address = TextAreaField(_l("Registered address"), validators=[Optional(), Length(max=500)])
    country = StringField(
        _l("Country"), validators=[Optional(), Length(max=10)], description=_l("Two letters, like DE or CN.")
    )
    monthly_volume = StringField(
        _l("Expected monthly volume"),
        validators=[Optional(), Length(max=30)],
        description=_l("In the currency's units, like 25000.00."),
    )
    volume_currency = StringField(
        _l("Currency of the volume"), validators=[Optional(), Length(max=10)], description=_l("For example EUR.")
    )
    bank_holder_name = StringField(_l("Account holder"), validators=[Optional(), Length(max=140)])
    bank_account = StringField(
        _l("IBAN or account number"),
        validators=[Optional(), Length(max=64)],
        description=_l("Stored encrypted; shown only by its last four characters. Leave empty to keep the saved one."),
    )
    bank_code = StringField(
        _l("BIC or bank code"),
        validators=[Optional(), Length(max=34)],
        description=_l("Optional with an IBAN; an account number needs its bank code."),
    )
    bank_name = StringField(_l("Bank name"), validators=[Optional(), Length(max=140)])
    bank_country = StringField(
        _l("Bank country"),
        validators=[Optional(), Length(max=10)],
        description=_l("Two letters, for an account number; an IBAN carries its own."),
    )


class DocumentForm(FlaskForm):
    kind = SelectField(
        _l("Document"), choices=[SelectChoice(value=k, label=v) for k, v in DOCUMENT_KIND_LABELS.items()]
    )
    file = FileField(_l("File"), validators=[FileRequired(_l("Choose the document's file."))])


def _ids() -> tuple[uuid.UUID, uuid.UUID]:
    return current_user.tenant_id, current_user.merchant_id


def _profile_data() -> dict | None:
    tenant_id, merchant_id = _ids()
    profile = profiles.profile_of(tenant_id, merchant_id)
    bank = profiles.bank_account_of(tenant_id, merchant_id)
    data: dict = {}
    if profile is not None:
        data.update({name: getattr(profile, name) for name in profile.FIELDS})
        if profile.monthly_volume is not None:
            data["monthly_volume"] = str(to_major(profile.monthly_volume, profile.volume_currency))
            data["volume_currency"] = profile.volume_currency
    if bank is not None:
        # The stored account number is never put back into the form.
        data.update(
            bank_holder_name=bank.holder_name,
            bank_code=bank.bank_code or "",
            bank_name=bank.bank_name,
            bank_country=bank.country if bank.kind == "number" else "",
        )
    return data or None


def _page(profile_form: ProfileForm | None = None, document_form: DocumentForm | None = None, status: int = 200):
    tenant_id, merchant_id = _ids()
    merchant = current_user.merchant
    profile = profiles.profile_of(tenant_id, merchant_id)
    return theming.render(
        "merchant/onboarding.html",
        merchant=merchant,
        profile=profile,
        volume=(
            f"{to_major(profile.monthly_volume, profile.volume_currency):,} {profile.volume_currency}"
            if profile is not None and profile.monthly_volume is not None
            else None
        ),
        bank_account=profiles.bank_account_of(tenant_id, merchant_id),
        documents=documents.documents_of(tenant_id, merchant_id),
        missing=review.missing(tenant_id, merchant_id),
        required=review.REQUIRED_DOCUMENTS,
        kind_labels=DOCUMENT_KIND_LABELS,
        status_labels=STATUS_LABELS,
        editable=merchant.onboarding_status in profiles.EDITABLE,
        profile_form=profile_form or ProfileForm(formdata=None, data=_profile_data()),
        document_form=document_form or DocumentForm(formdata=None),
        action_form=ActionForm(),
        max_mb=current_app.config["KYC_DOCUMENT_MAX_BYTES"] // (1024 * 1024),
    ), status


@bp.route("/onboarding")
@merchant_role_required(*MERCHANT_ROLES)
def onboarding():
    return _page()


@bp.route("/onboarding/profile", methods=["POST"])
@merchant_role_required("owner")
def save_profile():
    form = ProfileForm()
    if not form.validate_on_submit():
        note_expired(form)
        return _page(profile_form=form, status=422)
    tenant_id, merchant_id = _ids()
    typed = {name: (getattr(form, name).data or "") for name in profiles.ProfileInput.__dataclass_fields__}
    try:
        profiles.save(tenant_id, merchant_id, profiles.ProfileInput(**typed), current_actor())
    except InvalidInput as exc:
        if exc.field is None:  # the application may not change now: the form is not on the page
            flash(exc.message, "error")
            return redirect(url_for("merchant.onboarding"))
        field_error(form, exc)
        return _page(profile_form=form, status=422)
    flash(_("Business profile saved."), "success")
    return redirect(url_for("merchant.onboarding") + "#profile")


@bp.url_value_preprocessor
def _document_limit(endpoint, values):
    """A document may be larger than the app's request limit (MAX_CONTENT_LENGTH): its upload's own
    limit is set here, before CSRFProtect reads the form (see `portal.console.payouts`). A body
    larger still is refused with the 413 page."""
    if endpoint == "merchant.upload_document":
        request.max_content_length = current_app.config["KYC_DOCUMENT_MAX_BYTES"] + UPLOAD_ENVELOPE


@bp.route("/onboarding/documents", methods=["POST"])
@merchant_role_required("owner")
def upload_document():
    form = DocumentForm()
    if not form.validate_on_submit():
        note_expired(form)
        return _page(document_form=form, status=422)
    limit = current_app.config["KYC_DOCUMENT_MAX_BYTES"]
    upload = form.file.data
    data = upload.read(limit + 1)
    tenant_id, merchant_id = _ids()
    try:
        document = documents.upload(
            tenant_id,
            merchant_id,
            form.kind.data,
            upload.filename,
            data,
            upload_dir=current_app.config["UPLOAD_DIR"],
            max_bytes=limit,
            actor=current_actor(),
        )
    except InvalidInput as exc:
        if exc.field is None:
            flash(exc.message, "error")
            return redirect(url_for("merchant.onboarding"))
        field_error(form, exc)
        return _page(document_form=form, status=422)
    flash(
        _("%(kind)s uploaded: %(name)s.", kind=DOCUMENT_KIND_LABELS[document.kind], name=document.original_name),
        "success",
    )
    return redirect(url_for("merchant.onboarding") + "#documents")


@bp.route("/onboarding/documents/<uuid:document_id>")
@merchant_role_required(*MERCHANT_ROLES)
def kyc_document(document_id: uuid.UUID):
    tenant_id, merchant_id = _ids()
    return send_document(documents.get(tenant_id, merchant_id, document_id))


@bp.route("/onboarding/documents/<uuid:document_id>/delete", methods=["POST"])
@merchant_role_required("owner")
def delete_kyc_document(document_id: uuid.UUID):
    tenant_id, merchant_id = _ids()
    if documents.get(tenant_id, merchant_id, document_id) is None:
        abort(404)
    if ActionForm().validate_on_submit():
        try:
            document = documents.delete(
                tenant_id,
                merchant_id,
                document_id,
                upload_dir=current_app.config["UPLOAD_DIR"],
                actor=current_actor(),
            )
        except InvalidInput as exc:
            flash(exc.message, "error")
        else:
            flash(_("%(name)s is deleted.", name=document.original_name), "success")
    return redirect(url_for("merchant.onboarding") + "#documents")


@bp.route("/onboarding/submit", methods=["POST"])
@merchant_role_required("owner")
def submit_onboarding():
    if ActionForm().validate_on_submit():
        tenant_id, merchant_id = _ids()
        try:
            review.submit(tenant_id, merchant_id, current_actor())
        except InvalidInput as exc:
            flash(exc.message, "error")
        else:
            flash(_("Your application is submitted. We e-mail you when the review is done."), "success")
    return redirect(url_for("merchant.onboarding"))
