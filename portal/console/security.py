"""Console: sign-in security. A tenant admin decides whether the tenant's staff and/or its
merchants' users must use two-factor sign-in (`tenants.two_factor.set_requirement`, audited).
Someone who must and has not enrolled is sent to enrol at their next page."""

from __future__ import annotations

from flask import flash, g, redirect, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField

from portal import theming
from portal.access import tenant_role_required
from portal.console import bp
from portal.forms import note_expired
from portal.sites import current_actor
from tenants import two_factor


class TwoFactorPolicyForm(FlaskForm):
    require_2fa_staff = BooleanField(_l("Staff of this portal must use two-factor sign-in"))
    require_2fa_merchants = BooleanField(_l("Merchants' users must use two-factor sign-in"))


@bp.route("/security", methods=["GET", "POST"])
@tenant_role_required("admin")
def security():
    form = TwoFactorPolicyForm(
        data={
            "require_2fa_staff": g.tenant.require_2fa_staff,
            "require_2fa_merchants": g.tenant.require_2fa_merchants,
        }
    )
    if form.validate_on_submit():
        changed = two_factor.set_requirement(
            g.tenant, form.require_2fa_staff.data, form.require_2fa_merchants.data, current_actor()
        )
        flash(_("Sign-in security saved.") if changed else _("Nothing changed."), "success")
        return redirect(url_for("console.security"))
    note_expired(form)
    return theming.render("console/security.html", form=form), 422 if form.errors or form.form_errors else 200
