"""Languages: Simplified Chinese and English through Flask-Babel.

Templates write `{{ _("Payments") }}`; Python writes `gettext("...")` (or `lazy_gettext` for
strings built at import time, such as form labels). The catalogues live in
`portal/translations/<locale>/LC_MESSAGES/messages.po` and are compiled to `.mo` by `make`.
"""

from __future__ import annotations

from flask import Flask, g, request
from flask_babel import Babel

LOCALES = ("en", "zh")
DEFAULT_LOCALE = "en"

babel = Babel()


def select_locale() -> str:
    """The tenant's default language, else what the browser asks for."""
    tenant = getattr(g, "tenant", None)
    default = getattr(tenant, "default_locale", None)
    if default in LOCALES:
        return default
    return request.accept_languages.best_match(LOCALES) or DEFAULT_LOCALE


def select_timezone() -> str | None:
    tenant = getattr(g, "tenant", None)
    return getattr(tenant, "time_zone", None)


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
