"""Merchant dashboard: terminals (POS and face-pay devices) and their device keys.

Everyone of the merchant sees the list; only the owner registers, rotates keys and deactivates.
A new device key is rendered straight into the answer of the POST that made it (never into the
session, a flash message or a URL), with `Cache-Control: no-store`, and is not retrievable later.
"""

from __future__ import annotations

from flask import abort, flash, g, make_response, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from payments import terminals
from payments.terminals import Terminal
from portal import theming
from portal.access import merchant_role_required
from portal.forms import ActionForm, TerminalForm, field_error
from portal.merchant import bp
from portal.sites import current_actor
from tenants.errors import InvalidInput
from tenants.models import MERCHANT_ROLES


def _page(form: TerminalForm | None = None, status: int = 200):
    return theming.render(
        "merchant/terminals.html",
        merchant=current_user.merchant,
        terminals=terminals.list_terminals(current_user.tenant_id, current_user.merchant_id),
        form=form or TerminalForm(formdata=None),
        action_form=ActionForm(),
        api_base=request.host_url.rstrip("/"),
    ), status


def _key_page(terminal: Terminal, secret: str, rotated: bool = False):
    response = make_response(
        theming.render(
            "merchant/terminal_key.html",
            terminal=terminal,
            secret=secret,
            rotated=rotated,
            api_base=request.host_url.rstrip("/"),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _terminal(terminal_id: str) -> Terminal:
    """A terminal of the signed-in user's own merchant; any other id is 404."""
    terminal = terminals.get(g.tenant.id, current_user.merchant_id, terminal_id)
    if terminal is None:
        abort(404)
    return terminal


@bp.route("/terminals", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def terminals_list():
    return _page()


@bp.route("/terminals", methods=["POST"])
@merchant_role_required("owner")
def register_terminal():
    form = TerminalForm()
    if form.validate_on_submit():
        try:
            terminal, secret = terminals.register(
                current_user.tenant_id,
                current_user.merchant_id,
                name=form.name.data,
                kind=form.kind.data,
                serial_number=form.serial_number.data,
                location=form.location.data,
                mode=form.mode.data,
                actor=current_actor(),
            )
        except InvalidInput as exc:
            field_error(form, exc)
        else:
            return _key_page(terminal, secret)
    return _page(form, 422)


@bp.route("/terminals/<terminal_id>/rotate-key", methods=["POST"])
@merchant_role_required("owner")
def rotate_terminal_key(terminal_id: str):
    terminal = _terminal(terminal_id)
    if not ActionForm().validate_on_submit():
        flash(_("The key was not rotated: the form has expired. Try again."), "error")
        return redirect(url_for("merchant.terminals_list"))
    try:
        terminal, secret = terminals.rotate_key(terminal, current_actor())
    except InvalidInput as exc:
        flash(exc.message, "error")
        return redirect(url_for("merchant.terminals_list"))
    return _key_page(terminal, secret, rotated=True)


@bp.route("/terminals/<terminal_id>/deactivate", methods=["POST"])
@merchant_role_required("owner")
def deactivate_terminal(terminal_id: str):
    terminal = _terminal(terminal_id)
    if ActionForm().validate_on_submit():
        if terminals.deactivate(terminal, current_actor()):
            flash(_("%(name)s is deactivated: its device key no longer works.", name=terminal.name), "success")
        else:
            flash(_("%(name)s was already deactivated.", name=terminal.name), "error")
    return redirect(url_for("merchant.terminals_list"))
