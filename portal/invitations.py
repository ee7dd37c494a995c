"""Invitation and password-reset e-mails: a signed link on the right host, in the right brand."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app
from flask_babel import lazy_gettext as _l

from portal import mail
from portal.i18n import language, recipient_locale
from portal.sites import PLATFORM_BRAND, BrandView, platform_base_url, tenant_base_url
from tenants import branding, tokens
from tenants.models import PlatformUser, Tenant, User


def _link(base: str, path: str, purpose: str, account) -> str:
    return f"{base}{path}/{tokens.make(current_app.config['SECRET_KEY'], purpose, account)}"


def _host(base_url: str) -> str:
    return urlsplit(base_url).hostname or "localhost"


# The roles as an invitation names them, in the recipient's language.
ROLE_LABELS = {
    "admin": _l("admin"),
    "operator": _l("operator"),
    "finance": _l("finance"),
    "owner": _l("owner"),
    "staff": _l("staff"),
}


def send_invitation(tenant: Tenant, user: User) -> str:
    """E-mail `user` a link to set a password on `tenant`'s host. Returns the link."""
    base = tenant_base_url(tenant)
    link = _link(base, "/invitation", "invitation", user)
    brand = BrandView.of(branding.brand(tenant.id, "published"))
    days = current_app.config["INVITATION_MAX_AGE"] // 86400
    locale = recipient_locale(user, tenant)
    with language(locale):
        role_label = str(ROLE_LABELS.get(user.role, user.role))
    mail.send(
        user.email,
        "invitation",
        brand,
        _host(base),
        locale=locale,
        link=link,
        user=user,
        days=days,
        role=user.role,
        role_label=role_label,
        merchant=user.merchant,
    )
    return link


def send_password_reset(account: User | PlatformUser, tenant: Tenant | None) -> str:
    """E-mail `account` a password-reset link on its own host. Returns the link."""
    if tenant is None:
        base, brand = platform_base_url(), PLATFORM_BRAND
    else:
        base, brand = tenant_base_url(tenant), BrandView.of(branding.brand(tenant.id, "published"))
    link = _link(base, "/password/reset", "password-reset", account)
    minutes = current_app.config["PASSWORD_RESET_MAX_AGE"] // 60
    mail.send(
        account.email,
        "password_reset",
        brand,
        _host(base),
        locale=recipient_locale(account, tenant),
        link=link,
        minutes=minutes,
    )
    return link
