"""Error pages.

An unknown host gets a plain page that names no tenant and no platform. Error pages on a
tenant's host wear the tenant's brand; a suspended tenant's host shows only the notice.
"""

from __future__ import annotations

from flask import Flask, g, make_response, render_template
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError

from portal import theming

MESSAGES = {
    400: (_l("Bad request"), _l("The request could not be understood.")),
    403: (_l("Not allowed"), _l("Your account is not allowed to open this page.")),
    404: (_l("Page not found"), _l("There is no page at this address.")),
    405: (_l("Not allowed"), _l("This page does not accept that kind of request.")),
    413: (_l("Too large"), _l("The upload is larger than allowed.")),
    # With `Retry-After` (`portal.limits`).
    429: (_l("Too many attempts"), _l("There were too many attempts in a short time. Wait a minute and try again.")),
    500: (_l("Something went wrong"), _l("We could not complete the request. Please try again.")),
}


def _render_error(code: int, title, message):
    """The error page in the request's language (the titles and messages are lazy translations)."""
    title, message = str(title), str(message)
    site = getattr(g, "site", None)
    if site is None or not (site.is_tenant or site.is_platform):
        # Unknown host: nothing about tenants, themes or the platform.
        return make_response(render_template("errors/plain.html", code=code, title=title, message=message), code)
    return make_response(theming.render("errors/error.html", code=code, title=title, message=message), code)


def suspended_response():
    return make_response(theming.render("errors/suspended.html"), 403)


def init_app(app: Flask) -> None:
    for code, (title, message) in MESSAGES.items():
        app.register_error_handler(code, lambda exc, c=code, t=title, m=message: _render_error(c, t, m))

    @app.errorhandler(CSRFError)
    def _csrf_error(exc):
        return _render_error(
            400,
            _l("Form expired"),
            _l("The form was missing its security token or it expired. Go back, reload the page and submit again."),
        )
