"""Merchant dashboard: webhook endpoints, their signing secrets (shown once), and delivery logs.

Everyone of the merchant sees endpoints and logs; only the owner adds, changes, deletes and
resends. A new endpoint's signing secret is rendered straight into the answer of the POST that
made it (never into the session, a flash message or a URL), with `Cache-Control: no-store`.
"""

from __future__ import annotations

import os
import uuid

from flask import abort, current_app, flash, make_response, redirect, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from redis.exceptions import RedisError
from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from payments import webhooks
from payments.errors import NotFound, PaymentError
from payments.webhooks import WebhookDelivery, WebhookEndpoint
from portal import theming
from portal.access import merchant_role_required
from portal.forms import ActionForm, labelled
from portal.merchant import bp
from portal.pagination import newest_first
from portal.sites import current_actor
from tenants.models import MERCHANT_ROLES

EVENT_CHOICES = {webhooks.ALL_EVENTS: _l("All events (*), including types added later")} | {
    name: name for name in webhooks.EVENT_TYPES
}
LOG_PAGE_SIZE = 25


def allow_private_urls(config) -> bool:
    """Whether endpoints may point at loopback or private addresses: `WEBHOOKS_ALLOW_PRIVATE`
    (or `PAYPLAT_WEBHOOKS_ALLOW_PRIVATE`); by default everywhere but in production."""
    value = config.get("WEBHOOKS_ALLOW_PRIVATE", os.environ.get("PAYPLAT_WEBHOOKS_ALLOW_PRIVATE"))
    if value is None:
        return config.get("ENV") != "production"
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _configure(state) -> None:
    webhooks.configure(allow_private=allow_private_urls(state.app.config))


# The delivery jobs run in the same app (the worker's), so they read the same setting.
bp.record_once(_configure)


def _at_least_one(form, field) -> None:
    # (A plain validator: DataRequired would mark every checkbox `required` for browsers.)
    if not field.data:
        raise ValidationError(_("Choose at least one event type, or all events."))


def _events_field():
    return SelectMultipleField(
        _l("Events to send"),
        choices=labelled(EVENT_CHOICES),
        validators=[_at_least_one],
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
    )


class WebhookEndpointForm(FlaskForm):
    url = StringField(
        _l("Endpoint URL"),
        validators=[DataRequired(), Length(max=webhooks.URL_MAX)],
        description=_l("Where your events are POSTed, e.g. https://shop.example.com/webhooks/payments."),
    )
    mode = SelectField(_l("Mode"), choices=labelled({"test": _l("Test mode events"), "live": _l("Live mode events")}))
    events = _events_field()
    description = StringField(_l("Description"), validators=[Optional(), Length(max=webhooks.DESCRIPTION_MAX)])


class WebhookEditForm(FlaskForm):
    url = StringField(_l("Endpoint URL"), validators=[DataRequired(), Length(max=webhooks.URL_MAX)])
    events = _events_field()
    description = StringField(_l("Description"), validators=[Optional(), Length(max=webhooks.DESCRIPTION_MAX)])


_FIELDS = {"url": "url", "enabled_events": "events", "description": "description"}


def _show_error(form: FlaskForm, exc: PaymentError) -> None:
    field = getattr(form, _FIELDS.get(exc.param or "", ""), None)
    if field is not None:
        field.errors = [*field.errors, exc.message]
    else:
        form.form_errors.append(exc.message)


def _mode() -> str:
    return "live" if request.args.get("mode") == "live" else "test"


def _endpoint(endpoint_id: str) -> WebhookEndpoint:
    """An endpoint of the signed-in user's own merchant; any other id is 404."""
    try:
        return webhooks.get_endpoint(current_user.tenant_id, current_user.merchant_id, endpoint_id)
    except NotFound:
        abort(404)


def _delivery(endpoint: WebhookEndpoint, delivery_id: uuid.UUID) -> WebhookDelivery:
    try:
        return webhooks.get_delivery(endpoint, delivery_id)
    except NotFound:
        abort(404)


def _list_page(form: WebhookEndpointForm | None = None, status: int = 200, mode: str | None = None):
    mode = mode or _mode()
    if form is None:
        form = WebhookEndpointForm(formdata=None, mode=mode, events=[webhooks.ALL_EVENTS])
    html = theming.render(
        "merchant/webhooks.html",
        merchant=current_user.merchant,
        mode=mode,
        endpoints=webhooks.list_endpoints(current_user.tenant_id, current_user.merchant_id, mode == "live"),
        form=form,
    )
    return html, status


@bp.route("/webhooks", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def webhooks_list():
    return _list_page()


@bp.route("/webhooks", methods=["POST"])
@merchant_role_required("owner")
def create_webhook():
    form = WebhookEndpointForm()
    if form.validate_on_submit():
        try:
            endpoint, secret = webhooks.create_endpoint(
                current_user.tenant_id,
                current_user.merchant_id,
                form.mode.data == "live",
                form.url.data,
                form.events.data,
                current_actor(),
                description=form.description.data,
                allow_private=allow_private_urls(current_app.config),
            )
        except PaymentError as exc:
            _show_error(form, exc)
        else:
            response = make_response(theming.render("merchant/webhook_secret.html", endpoint=endpoint, secret=secret))
            response.headers["Cache-Control"] = "no-store"
            return response
    return _list_page(form, 422, mode="live" if form.mode.data == "live" else "test")


def _detail_page(endpoint: WebhookEndpoint, edit_form: WebhookEditForm | None = None, status: int = 200):
    page = newest_first(webhooks.deliveries_query(endpoint), WebhookDelivery, request.args.get("after"), LOG_PAGE_SIZE)
    if edit_form is None:
        edit_form = WebhookEditForm(
            formdata=None,
            url=endpoint.url,
            events=list(endpoint.enabled_events),
            description=endpoint.description or "",
        )
    html = theming.render(
        "merchant/webhook.html",
        endpoint=endpoint,
        page=page,
        types=webhooks.event_types(endpoint.tenant_id, [d.event_id for d in page.items]),
        edit_form=edit_form,
        action_form=ActionForm(),
    )
    return html, status


@bp.route("/webhooks/<endpoint_id>", methods=["GET"])
@merchant_role_required(*MERCHANT_ROLES)
def webhook(endpoint_id: str):
    return _detail_page(_endpoint(endpoint_id))


@bp.route("/webhooks/<endpoint_id>", methods=["POST"])
@merchant_role_required("owner")
def update_webhook(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    form = WebhookEditForm()
    if form.validate_on_submit():
        try:
            webhooks.update_endpoint(
                endpoint,
                current_actor(),
                url=form.url.data,
                enabled_events=form.events.data,
                description=form.description.data or "",
                allow_private=allow_private_urls(current_app.config),
            )
        except PaymentError as exc:
            _show_error(form, exc)
        else:
            flash(_("The endpoint is saved."), "success")
            return redirect(url_for("merchant.webhook", endpoint_id=endpoint.id))
    return _detail_page(endpoint, form, 422)


@bp.route("/webhooks/<endpoint_id>/status", methods=["POST"])
@merchant_role_required("owner")
def set_webhook_status(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if ActionForm().validate_on_submit():
        disabled = request.form.get("disabled") == "1"
        webhooks.update_endpoint(endpoint, current_actor(), disabled=disabled)
        if disabled:
            flash(_("The endpoint is disabled: no events are sent to it until you enable it."), "success")
        else:
            flash(_("The endpoint is enabled: new events are sent to it again."), "success")
    else:
        flash(_("The form expired; try again."), "error")
    return redirect(url_for("merchant.webhook", endpoint_id=endpoint.id))


@bp.route("/webhooks/<endpoint_id>/delete", methods=["POST"])
@merchant_role_required("owner")
def delete_webhook(endpoint_id: str):
    endpoint = _endpoint(endpoint_id)
    if not ActionForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return redirect(url_for("merchant.webhook", endpoint_id=endpoint.id))
    webhooks.delete_endpoint(endpoint, current_actor())
    flash(_("The endpoint %(url)s is deleted.", url=endpoint.url), "success")
    return redirect(url_for("merchant.webhooks_list", mode=endpoint.mode))


@bp.route("/webhooks/<endpoint_id>/deliveries/<uuid:delivery_id>/resend", methods=["POST"])
@merchant_role_required("owner")
def resend_webhook_delivery(endpoint_id: str, delivery_id: uuid.UUID):
    endpoint = _endpoint(endpoint_id)
    delivery = _delivery(endpoint, delivery_id)
    if ActionForm().validate_on_submit():
        try:
            webhooks.resend(delivery, current_actor())
        except RedisError:  # the job queue is unreachable: say so, change nothing
            flash(_("The event could not be resent just now; try again in a minute."), "error")
        else:
            flash(
                _(
                    "The event %(event_id)s is being sent again; the log below shows the answer.",
                    event_id=delivery.event_id,
                ),
                "success",
            )
    else:
        flash(_("The form expired; try again."), "error")
    return redirect(url_for("merchant.webhook", endpoint_id=endpoint.id))
