"""Inbound channel notifications: `POST /channels/notify/<channel account id>` on a tenant's host.

The URL a tenant gives its channel (Stripe's webhook endpoint, a bank's notify_url) for one channel account.
No sign-in and no CSRF token: the channel proves itself by signing the body with the account's webhook
secret, which its adapter verifies. The host names the tenant, as for every tenant route, and the account
is looked up within that tenant only, so another tenant's account id is a 404. Every answer is JSON: 200
`{"received": true}` once the notification is verified (applied, or ignored when it is about nothing of
ours, so that the channel stops sending it), 400 saying why it was refused (nothing changed), 404.
Logs name the account and the event, never the body, headers or secrets.
"""

from __future__ import annotations

import logging
import uuid

from flask import Blueprint, Response, g, jsonify, request

from payments import notifications
from payments.channels.base import ChannelConfigError, ChannelNotSupported, InvalidNotification
from portal.access import host_guard
from portal.extensions import csrf

log = logging.getLogger(__name__)

bp = Blueprint("notifications", __name__)
bp.before_request(host_guard("tenant"))
csrf.exempt(bp)


def _error(status: int, type_: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"type": type_, "message": message}), status


def _not_found() -> tuple[Response, int]:
    return _error(404, "not_found", "No such channel account on this site.")


@bp.errorhandler(404)
def _page_not_found(_exc):
    return _not_found()


@bp.post("/notify/<uuid:channel_account_id>")
def receive(channel_account_id: uuid.UUID):
    try:
        notifications.receive(g.tenant.id, channel_account_id, request.headers, request.get_data())
    except notifications.NoSuchChannelAccount:
        return _not_found()
    except InvalidNotification as exc:
        log.warning("notification for channel account %s rejected: %s", channel_account_id, exc)
        return _error(400, "invalid_notification", f"{exc}; nothing was changed.")
    except ChannelConfigError as exc:
        log.warning("notification for channel account %s not verifiable: %s", channel_account_id, exc)
        return _error(400, "channel_not_configured", f"{exc}; nothing was changed.")
    except ChannelNotSupported as exc:
        return _error(404, "not_supported", str(exc))
    return jsonify(received=True)
