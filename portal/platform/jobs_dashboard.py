"""The `rq-dashboard` package, mounted at /platform/jobs for platform admins on the platform host.

rq-dashboard has no access control of its own (it leaves that to the host app), so the app checks
every request to its blueprint before it runs (`_guard`): a tenant's host answers 404, an anonymous
visitor is sent to sign in, anyone but a platform admin gets 403.

Its actions (requeue, delete, empty, compact) are jQuery POSTs without a form. They stay under the
app's CSRF protection: the dashboard's own script sends the `_csrf_token` cookie's value as the
`X-CSRFToken` header, so every dashboard page sets that cookie to the session's CSRF token
(readable by the page's script, sent only to /platform/jobs on the same site); Flask-WTF checks it as
it checks a form's token. A cross-site page can neither read that cookie nor set the header. The one
action it also takes by GET (requeue all failed jobs of a queue) is refused unless POSTed.
"""

from __future__ import annotations

import rq_dashboard
from flask import Flask, abort, current_app, g, request
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from rq.exceptions import NoSuchJobError
from rq_dashboard.web import setup_rq_connection
from werkzeug.exceptions import NotFound

from portal.extensions import login_manager

PREFIX = "/platform/jobs"
BLUEPRINT = rq_dashboard.blueprint.name  # "rq_dashboard"
CSRF_COOKIE = "_csrf_token"  # the name the dashboard's script reads


def init_app(app: Flask) -> None:
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 5000)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
    # rq-dashboard's own CLI does this at start; embedded, the host app does (no connection is opened yet).
    setup_rq_connection(app)
    # App-level hooks (registered after the site is resolved): the blueprint object is the package's
    # module-level one, shared by every app, so nothing is added to it.
    app.before_request(_guard)
    app.after_request(_csrf_cookie)
    app.register_error_handler(NoSuchJobError, _unknown_job)


def _guard():
    if request.blueprint != BLUEPRINT:
        return None
    site = g.get("site")
    if site is None or site.kind != "platform":
        abort(404)
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not (current_user.scope == "platform" and current_user.role == "admin"):
        abort(403)
    if request.endpoint == f"{BLUEPRINT}.requeue_all" and request.method != "POST":
        abort(405)
    return None


def _unknown_job(error: NoSuchJobError):
    """A job id Redis does not have (finished jobs expire): the dashboard's page for it does not exist."""
    return current_app.handle_http_exception(NotFound())


def _csrf_cookie(response):
    if request.blueprint == BLUEPRINT and response.status_code == 200 and response.mimetype == "text/html":
        response.set_cookie(
            CSRF_COOKIE,
            generate_csrf(),
            path=PREFIX,
            secure=request.is_secure,
            httponly=False,  # read by the dashboard's script, which puts it in the X-CSRFToken header
            samesite="Strict",
        )
    return response


__all__ = ["PREFIX", "init_app"]
