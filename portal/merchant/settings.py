"""Merchant dashboard: the merchant's settings, for its owner. For now the sites that may show the
hosted checkout and payment link pages in a frame (`tenants.frame_domains`, `portal.security`)."""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import Length

from portal import theming
from portal.access import merchant_role_required
from portal.forms import field_error
from portal.merchant import bp
from portal.sites import current_actor
from tenants import frame_domains
from tenants.errors import InvalidInput


class FrameDomainsForm(FlaskForm):
    frame_domains = TextAreaField(
        _l("Sites that may show your checkout in a frame"),
        validators=[Length(max=4000)],
        description=_l(
            "One per line, such as shop.example.com, *.example.com or https://shop.example.com:8443; only "
            "secure (https) sites. Leave empty to let no site frame your checkout."
        ),
    )


@bp.route("/settings", methods=["GET", "POST"])
@merchant_role_required("owner")
def settings():
    merchant = current_user.merchant
    form = FrameDomainsForm()
    if form.validate_on_submit():
        try:
            frame_domains.set_allowed(
                current_user.tenant_id, current_user.merchant_id, form.frame_domains.data or "", current_actor()
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            flash(_("The settings are saved."), "success")
            return redirect(url_for("merchant.settings"))
    elif not form.is_submitted():
        form.frame_domains.data = "\n".join(merchant.frame_domains or [])
    status = 422 if form.errors or form.form_errors else 200
    return theming.render("merchant/settings.html", form=form, merchant=merchant), status
