"""Languages: Simplified Chinese and English through Flask-Babel, and locale-aware formatting.

Templates write `{{ _("Payments") }}` (`{{ _("%(n)s left", n=count) }}` for values, `ngettext` for
plurals); Python writes `gettext("...")`, or `lazy_gettext` for strings built at import time
(form labels and choices). The catalogues live in `portal/translations/<locale>/LC_MESSAGES/`;
`messages.po` is the source, `messages.mo` is compiled by `make` (and by the test suite when
missing) and never committed. `make translations` re-extracts `messages.pot` and merges it into
every `messages.po`.

The language of a request, first that applies: the signed-in user's choice (`users.locale`,
`platform_users.locale`; NULL follows the rest) → the `locale` cookie an anonymous visitor set
with the switcher → the tenant's `default_locale` → the browser's Accept-Language → English.
The merchant REST API (`/v1`) and the channels' notifications always speak English.

Amounts, dates and numbers are formatted for the request's locale and the tenant's time zone by
`format_amount`, `format_when`, `format_day`, `format_number`, `format_percent` (also the Jinja
filters `money`, `when`, `day`, `number`, `percent`). English keeps the platform's plain style
("12,345.67 CNY", "2024-05-01 09:30"); Chinese uses the locale's own ("¥12,345.67",
"2024年5月1日 09:30").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytz
from babel import Locale
from babel.numbers import format_currency, format_decimal
from babel.numbers import format_percent as babel_format_percent
from flask import Blueprint, Flask, abort, g, has_request_context, redirect, request, url_for
from flask_babel import Babel, force_locale, get_locale, lazy_gettext, lazy_pgettext
from flask_babel import format_datetime as babel_format_datetime
from flask_login import current_user

from core.money import to_major

LOCALES = ("en", "zh")
DEFAULT_LOCALE = "en"
COOKIE = "locale"
COOKIE_MAX_AGE = 365 * 86400
# What the switcher shows: each language in its own name.
LANGUAGE_NAMES = {"en": "English", "zh": "中文"}
# Blueprints that speak to machines, never to people: always English (Stripe's format).
ENGLISH_ONLY_BLUEPRINTS = frozenset({"api", "notifications"})

babel = Babel()
bp = Blueprint("i18n", __name__)


def _known(value: str | None) -> str | None:
    return value if value in LOCALES else None


def account_locale(account) -> str | None:
    """The language a person chose for their account, or None (follows the tenant)."""
    return _known(getattr(account, "locale", None))


def tenant_locale(tenant) -> str:
    return _known(getattr(tenant, "default_locale", None)) or DEFAULT_LOCALE


def recipient_locale(account, tenant) -> str:
    """The language of an e-mail to `account`: their own choice, else the tenant's default."""
    return account_locale(account) or tenant_locale(tenant)


def select_locale() -> str:
    """The language of this request (see the module's docstring for the order)."""
    if not has_request_context():
        return DEFAULT_LOCALE
    if request.blueprint in ENGLISH_ONLY_BLUEPRINTS or request.path == "/v1" or request.path.startswith("/v1/"):
        return DEFAULT_LOCALE
    if current_user and current_user.is_authenticated:
        chosen = account_locale(current_user)
        if chosen:
            return chosen
    cookie = _known(request.cookies.get(COOKIE))
    if cookie:
        return cookie
    tenant_default = _known(getattr(getattr(g, "tenant", None), "default_locale", None))
    if tenant_default:
        return tenant_default
    return request.accept_languages.best_match(LOCALES) or DEFAULT_LOCALE


def select_timezone() -> str | None:
    """The tenant's time zone (an unknown name, which no form accepts, counts as UTC)."""
    zone = getattr(getattr(g, "tenant", None), "time_zone", None)
    if zone is None:
        return None
    try:
        pytz.timezone(zone)
    except pytz.UnknownTimeZoneError:
        return None
    return zone


def current_locale() -> str:
    locale = get_locale()
    return locale.language if locale is not None and locale.language in LOCALES else DEFAULT_LOCALE


def html_lang() -> str:
    """The `lang` attribute of a page in the current language."""
    return "zh-CN" if current_locale() == "zh" else "en"


@contextlib.contextmanager
def language(locale: str) -> Iterator[None]:
    """Render in `locale` for a while (an e-mail in its recipient's language)."""
    with force_locale(_known(locale) or DEFAULT_LOCALE):
        yield


# --- catalogues -----------------------------------------------------------------------------

TRANSLATIONS_DIR = Path(__file__).parent / "translations"


def compile_catalogues(directory: Path = TRANSLATIONS_DIR) -> list[Path]:
    """Compile every `messages.po` whose `messages.mo` is missing or older (what `make` does; the
    test suite calls this so a plain `pytest` works). Returns the compiled files."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    compiled = []
    for po_path in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as handle:
            catalog = read_po(handle, locale=po_path.parent.parent.name)
        with mo_path.open("wb") as handle:
            write_mo(handle, catalog)
        compiled.append(mo_path)
    return compiled


# --- formatting ----------------------------------------------------------------------------

EN_MONEY = "#,##0.00 ¤¤"
DATETIME_PATTERNS = {"en": "yyyy-MM-dd HH:mm", "zh": "yyyy年M月d日 HH:mm"}
DATETIME_SECONDS_PATTERNS = {"en": "yyyy-MM-dd HH:mm:ss", "zh": "yyyy年M月d日 HH:mm:ss"}
DATE_PATTERNS = {"en": "yyyy-MM-dd", "zh": "yyyy年M月d日"}


def format_amount(amount: int | None, currency: str) -> str:
    """Minor units of `currency` for people, exactly (Decimal, never float), in the request's
    locale: 1234567 CNY → "12,345.67 CNY" (en), "¥12,345.67" (zh). None → "—"."""
    if amount is None:
        return "—"
    code = (currency or "").upper()
    value: Decimal = to_major(int(amount), code)
    locale = current_locale()
    if locale == "en":
        return format_currency(value, code, format=EN_MONEY, locale="en", currency_digits=True)
    return format_currency(value, code, locale=Locale.parse(locale), currency_digits=True)


def _pattern(seconds: bool) -> str:
    return (DATETIME_SECONDS_PATTERNS if seconds else DATETIME_PATTERNS)[current_locale()]


def format_when(moment: datetime | None, seconds: bool = False) -> str:
    """An instant as a date and time in the tenant's time zone (UTC on the platform host)."""
    if moment is None:
        return "—"
    return babel_format_datetime(moment, _pattern(seconds))


def format_utc(moment: datetime | None, seconds: bool = False) -> str:
    """An instant as a date and time in UTC, saying so (API keys and webhooks, which speak UTC)."""
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return babel_format_datetime(moment.astimezone(UTC), _pattern(seconds), rebase=False) + " UTC"


def format_day(day: date | datetime | None) -> str:
    """A calendar day (a `date`, or an instant's day in the tenant's time zone)."""
    if day is None:
        return "—"
    if isinstance(day, datetime):
        return babel_format_datetime(day, DATE_PATTERNS[current_locale()])
    from babel.dates import format_date

    return format_date(day, DATE_PATTERNS[current_locale()], locale=current_locale())


def format_number(value: int | Decimal | None) -> str:
    if value is None:
        return "—"
    return format_decimal(value, locale=current_locale())


def format_percent(value: Decimal | int | None, digits: int = 2) -> str:
    """A fraction (0.0125) as a percentage ("1.25%") in the request's locale."""
    if value is None:
        return "—"
    pattern = "#,##0" + ("." + "#" * digits if digits else "") + "%"
    return babel_format_percent(Decimal(str(value)), pattern, locale=current_locale())


# --- names of states and roles ------------------------------------------------------------
# The English label of a state is its stored value (what the API returns), so English pages read
# the same; other languages translate it (context "status"/"role" keeps them apart from prose).

STATUS_LABELS = {
    "requires_payment_method": lazy_pgettext("status", "requires_payment_method"),
    "requires_confirmation": lazy_pgettext("status", "requires_confirmation"),
    "requires_action": lazy_pgettext("status", "requires_action"),
    "requires_capture": lazy_pgettext("status", "requires_capture"),
    "processing": lazy_pgettext("status", "processing"),
    "succeeded": lazy_pgettext("status", "succeeded"),
    "canceled": lazy_pgettext("status", "canceled"),
    "failed": lazy_pgettext("status", "failed"),
    "pending": lazy_pgettext("status", "pending"),
    "in_transit": lazy_pgettext("status", "in_transit"),
    "paid": lazy_pgettext("status", "paid"),
    "available": lazy_pgettext("status", "available"),
    "active": lazy_pgettext("status", "active"),
    "suspended": lazy_pgettext("status", "suspended"),
    "paused": lazy_pgettext("status", "paused"),
    "enabled": lazy_pgettext("status", "enabled"),
    "disabled": lazy_pgettext("status", "disabled"),
    "queued": lazy_pgettext("status", "queued"),
    "running": lazy_pgettext("status", "running"),
    "done": lazy_pgettext("status", "done"),
    "open": lazy_pgettext("status", "open"),
    "resolved": lazy_pgettext("status", "resolved"),
    "written_off": lazy_pgettext("status", "written_off"),
    "pending_write_off": lazy_pgettext("status", "pending_write_off"),
    "sent": lazy_pgettext("status", "sent"),
    "delivered": lazy_pgettext("status", "delivered"),
    "imported": lazy_pgettext("status", "imported"),
    "live": lazy_pgettext("status", "live"),
    "test": lazy_pgettext("status", "test"),
    "charge": lazy_pgettext("status", "charge"),
    "refund": lazy_pgettext("status", "refund"),
    "payout": lazy_pgettext("status", "payout"),
    "payout_failure": lazy_pgettext("status", "payout_failure"),
    "topup": lazy_pgettext("status", "topup"),
    "transfer": lazy_pgettext("status", "transfer"),
    "adjustment": lazy_pgettext("status", "adjustment"),
    "manual": lazy_pgettext("status", "manual"),
    "scheduled": lazy_pgettext("status", "scheduled"),
    "payment": lazy_pgettext("status", "payment"),
    "fee": lazy_pgettext("status", "fee"),
    "adjusted": lazy_pgettext("status", "adjusted"),
    "in_progress": lazy_pgettext("status", "in_progress"),
    "started": lazy_pgettext("status", "started"),
    "declined": lazy_pgettext("status", "declined"),
    "unavailable": lazy_pgettext("status", "unavailable"),
    "unknown": lazy_pgettext("status", "unknown"),
    "matched": lazy_pgettext("status", "matched"),
    "unmatched": lazy_pgettext("status", "unmatched"),
    "mismatch": lazy_pgettext("status", "mismatch"),
}
ROLE_LABELS = {
    "admin": lazy_pgettext("role", "admin"),
    "operator": lazy_pgettext("role", "operator"),
    "finance": lazy_pgettext("role", "finance"),
    "owner": lazy_pgettext("role", "owner"),
    "staff": lazy_pgettext("role", "staff"),
}


def status_label(value: str | None, spaced: bool = False) -> str:
    """A stored state (`succeeded`, `pending`, …) for people; unknown states show as stored.
    `spaced`: English writes it with spaces ("pending write off")."""
    if value is None:
        return "—"
    label = STATUS_LABELS.get(value)
    text = str(label) if label is not None else value
    return text.replace("_", " ") if spaced and text == value else text


def role_label(value: str | None) -> str:
    if value is None:
        return "—"
    label = ROLE_LABELS.get(value)
    return str(label) if label is not None else value


# --- the switcher ----------------------------------------------------------------------------


def safe_return_url(target: str | None) -> str | None:
    """A path on this same host, or None: never another host or scheme."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    return target


@bp.route("/language", methods=["POST"])
def switch_language():
    """The header's language switcher: remembers the choice (the account's, and a cookie for
    this browser) and goes back to the page it was on."""
    from portal.forms import ActionForm
    from tenants import accounts

    if not ActionForm().validate_on_submit():
        abort(400)
    chosen = _known(request.form.get("locale"))
    if chosen is None:
        abort(400)
    if current_user.is_authenticated:
        accounts.set_locale(current_user._get_current_object(), chosen)
    back = safe_return_url(request.form.get("next")) or url_for("auth.index")
    response = redirect(back)
    response.set_cookie(COOKIE, chosen, max_age=COOKIE_MAX_AGE, httponly=True, samesite="Lax", secure=request.is_secure)
    return response


def _language_switch_context() -> dict:
    if not has_request_context():
        return {}
    return {
        "languages": LANGUAGE_NAMES,
        "current_language": current_locale(),
        "html_lang": html_lang(),
        "here": request.full_path.rstrip("?") if request.query_string else request.path,
    }


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    app.register_blueprint(bp)
    app.context_processor(_language_switch_context)
    app.jinja_env.globals.update(
        format_amount=format_amount,
        local_time=format_when,
        utc_time=format_utc,
        status_label=status_label,
        format_day=format_day,
        format_number=format_number,
        format_percent=format_percent,
    )
    app.jinja_env.filters.update(
        money=lambda amount, currency: format_amount(amount, currency),
        when=format_when,
        day=format_day,
        number=format_number,
        percent=format_percent,
        status=status_label,
        role=role_label,
    )


__all__ = [
    "LOCALES",
    "format_amount",
    "format_day",
    "format_number",
    "format_percent",
    "format_when",
    "language",
    "lazy_gettext",
    "recipient_locale",
]
