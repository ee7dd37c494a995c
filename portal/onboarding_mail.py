"""Onboarding e-mails in the tenant's brand: the sign-up's verification link, the note to an
address that already has an account, and the reviewer's decision."""

from __future__ import annotations

from flask import current_app

from portal import mail
from portal.invitations import _host
from portal.sites import BrandView, tenant_base_url
from tenants import branding, tokens
from tenants.models import Merchant, Tenant, User


def _brand(tenant: Tenant) -> BrandView:
    return BrandView.of(branding.brand(tenant.id, "published"))


def send_signup_verification(tenant: Tenant, signup) -> str:
    """E-mail the link that verifies a sign-up. Returns the link."""
    base = tenant_base_url(tenant)
    link = f"{base}/signup/verify/{tokens.make(current_app.config['SECRET_KEY'], 'signup', signup)}"
    hours = current_app.config["SIGNUP_MAX_AGE"] // 3600
    mail.send(
        signup.email,
        "signup_verification",
        _brand(tenant),
        _host(base),
        link=link,
        hours=hours,
        business_name=signup.business_name,
    )
    return link


def send_signup_existing(tenant: Tenant, user: User) -> None:
    """Tell an account holder that someone (likely they) tried to sign up with their address."""
    base = tenant_base_url(tenant)
    mail.send(
        user.email,
        "signup_existing",
        _brand(tenant),
        _host(base),
        login_link=f"{base}/login",
        reset_link=f"{base}/password/forgot",
    )


def send_decision(tenant: Tenant, merchant: Merchant, recipients: list[User]) -> None:
    """The reviewer's decision and message, to the merchant's owners."""
    base = tenant_base_url(tenant)
    for user in recipients:
        mail.send(
            user.email,
            "onboarding_decision",
            _brand(tenant),
            _host(base),
            merchant=merchant,
            status=merchant.onboarding_status,
            message=merchant.review_message,
            link=f"{base}/merchant/onboarding",
        )
