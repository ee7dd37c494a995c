"""Demo data for `make run`: a platform admin, two tenants in different themes, two merchants
each, every account with a known password; the first merchant of each has test payments, charge
items, a coupon, a payment link and a terminal; each tenant has an applicant waiting in the KYC
review queue and a couple of risk rules (Acme's first merchant has a payment held for review).
Loading twice changes nothing.

The platform requires two-factor sign-in of platform admins: the demo's admin is enrolled with a
fixed, published secret (`PLATFORM_ADMIN_TOTP_SECRET`, printed with the logins), so anyone can add
it to an authenticator app or compute a code with `pyotp`. Demo data only: it is no secret."""

from __future__ import annotations

import contextlib
import io
from decimal import Decimal

import click
import sqlalchemy as sa
from flask import current_app
from PIL import Image

from billing import catalog, coupons, schedules
from billing.fees import FeeRule
from billing.models import FeeSchedule
from core.db import db
from onboarding import documents, review, signup
from onboarding import profile as profiles
from payments import channel_accounts, intents, links, terminals
from payments import products as catalogue
from payments.errors import PaymentError
from payments.models import ChannelAccount, PaymentIntent
from portal import theming
from portal.sites import platform_base_url, tenant_base_url
from risk import rules as risk_rules
from tenants import accounts, provisioning, two_factor
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context
from tenants.models import PlatformUser, Tenant, TenantBrand, User

PASSWORD = "demo-password-1"
PLATFORM_ADMIN = "admin@platform.example.com"
PLATFORM_ADMIN_TOTP_SECRET = "DEMOPLATFORMADMINTOTPSECRETKEY23"  # base32; demo data only
TENANTS = [
    {
        "spec": provisioning.TenantSpec(
            name="Acme Pay", slug="acme", admin_email="admin@acme.example.com", theme="default"
        ),
        "brand": {"primary_color": "#1d4ed8", "accent_color": "#f59e0b", "support_email": "help@acme.example.com"},
        "merchants": [
            ("Acme Coffee Roasters", "owner@coffee.example.com"),
            ("Acme Bike Repair", "owner@bikes.example.com"),
        ],
        "channels": [
            ("Sandbox cards", "USD", ["card"], {"card": {"percent": "2.4", "fixed": 20}}, 10, 500_000),
            ("Sandbox backup", "USD", ["card"], {"card": {"percent": "2.9", "fixed": 30}}, 20, None),
        ],
        # (product, currency, percent, fixed, minimum, volume from): 3.2 % + 0.30, 2.5 % from 10,000.00 a month
        "fees": [("card", "USD", "3.2", 30, 50, 0), ("card", "USD", "2.5", 30, 50, 1_000_000)],
        "platform_fee": "0.3",
        # (name, unit, unit price): the first merchant's charge items, and its payment link of both
        "items": [("Espresso beans 1 kg", "bag", "24.00"), ("Barista class", "hour", "45.00")],
        "coupon": "WELCOME10",
        "applicant": ("Sunrise Bakery", "owner@bakery.example.com", "DE89370400440532013000", "DE"),
        # Risk rules (`risk.rules`), and one payment the first rule holds, so the review queue has an entry.
        "risk": [
            {"name": "Large single payment", "kind": "large_amount", "action": "hold", "amount_limit": 200_000},
            {
                "name": "Card testing",
                "kind": "velocity",
                "action": "flag",
                "subject": "card",
                "window_minutes": 10,
                "count_limit": 5,
            },
            {
                "name": "Duplicate charge",
                "kind": "duplicate",
                "action": "block",
                "subject": "payer",
                "window_minutes": 5,
            },
        ],
        "held_payment": 250_000,
    },
    {
        "spec": provisioning.TenantSpec(
            name="Dragon Pay 龙付",
            slug="dragon",
            admin_email="admin@dragon.example.com",
            theme="midnight",
            time_zone="Asia/Shanghai",
            default_locale="zh",
        ),
        "brand": {"primary_color": "#dc2626", "accent_color": "#facc15", "support_email": "help@dragon.example.com"},
        "merchants": [
            ("Dragon Noodle House", "owner@noodles.example.com"),
            ("Dragon Tea Shop", "owner@tea.example.com"),
        ],
        "channels": [
            (
                "沙盒 Sandbox CNY",
                "CNY",
                ["card", "alipay_qr", "wechat_pay"],
                {
                    "card": {"percent": "0.6", "fixed": 0},
                    "alipay_qr": {"percent": "0.38", "fixed": 0},
                    "wechat_pay": {"percent": "0.38", "fixed": 0},
                },
                10,
                None,
            ),
        ],
        "fees": [
            ("card", "CNY", "0.9", 0, None, 0),
            ("alipay_qr", "CNY", "0.6", 0, None, 0),
            ("wechat_pay", "CNY", "0.6", 0, None, 0),
        ],
        "platform_fee": "0.1",
        "items": [("牛肉面 Beef noodles", "bowl", "28.00"), ("茶叶 Green tea 250 g", "tin", "88.00")],
        "coupon": "HUANYING10",
        "applicant": ("Dragon Dumplings", "owner@dumplings.example.com", "GB82WEST12345698765432", "GB"),
        "risk": [
            {"name": "大额 Large payment", "kind": "large_amount", "action": "hold", "amount_limit": 2_000_000},
            {
                "name": "拆分 Structuring",
                "kind": "structuring",
                "action": "flag",
                "subject": "payer",
                "window_minutes": 1440,
                "count_limit": 3,
                "amount_limit": 5_000_000,
                "percent": 10,
            },
        ],
        "held_payment": None,
    },
]


def load() -> None:
    admin = accounts.create_platform_admin(PLATFORM_ADMIN, PASSWORD, "Platform Admin")
    with platform_scope(db.session):
        admin = db.session.get(PlatformUser, admin.id)
        if not admin.has_two_factor:
            two_factor.enrol_with_secret(admin, PLATFORM_ADMIN_TOTP_SECRET, Actor.system())
    colors = {name: theme.colors for name, theme in theming.themes().items()}
    for entry in TENANTS:
        spec = entry["spec"]
        with platform_scope(db.session):
            tenant = db.session.execute(sa.select(Tenant).where(Tenant.slug == spec.slug)).scalar_one_or_none()
            if tenant is None:
                tenant, admin = provisioning.provision_tenant(spec, Actor.system(), colors)
            tenant_id = tenant.id
        with tenant_context(db.session, tenant_id):
            _ensure_password(tenant_id, spec.admin_email)
            for stage in ("draft", "published"):
                row = db.session.execute(
                    sa.select(TenantBrand).where(TenantBrand.tenant_id == tenant_id, TenantBrand.stage == stage)
                ).scalar_one()
                for key, value in entry["brand"].items():
                    setattr(row, key, value)
            db.session.commit()
            for name, owner_email in entry["merchants"]:
                exists = db.session.execute(
                    sa.select(User).where(User.tenant_id == tenant_id, User.email == owner_email)
                ).scalar_one_or_none()
                if exists is None:
                    provisioning.create_merchant(tenant_id, name, owner_email, Actor.system())
                _ensure_password(tenant_id, owner_email)
            _ensure_channels(tenant_id, entry["channels"])
            _ensure_fees(tenant_id, entry["fees"])
        _ensure_platform_fee(tenant_id, entry["platform_fee"])
        with tenant_context(db.session, tenant_id):
            _ensure_risk(tenant_id, entry["risk"], entry["channels"][0][1])
            _ensure_payments(tenant_id, entry["merchants"][0][1], entry["channels"][0][1], entry["held_payment"])
            _ensure_catalogue(tenant_id, entry["merchants"][0][1], entry["channels"][0][1], entry)
            _ensure_applicant(tenant_id, *entry["applicant"])


def _ensure_channels(tenant_id, channels) -> None:
    """Sandbox channel accounts in test mode, so demo merchants can take test payments at once."""
    existing = set(db.session.execute(sa.select(ChannelAccount.name)).scalars())
    for name, currency, products, costs, priority, max_amount in channels:
        if name not in existing:
            channel_accounts.create_channel_account(
                tenant_id,
                channel_accounts.ChannelAccountInput(
                    name=name,
                    type="sandbox",
                    currency=currency,
                    products=products,
                    costs=costs,
                    priority=priority,
                    max_amount=max_amount,
                ),
                set(catalogue.PRODUCTS),
                Actor.system(),
            )


def _ensure_fees(tenant_id, rules) -> None:
    """A default fee schedule, so demo payments show fees, fee details and net."""
    if db.session.execute(sa.select(FeeSchedule.id).where(FeeSchedule.tenant_id == tenant_id)).first():
        return
    schedule = schedules.create_schedule(tenant_id, "Standard", Actor.system(), is_default=True)
    schedules.add_version(
        tenant_id,
        schedule.id,
        [
            FeeRule(product, currency, Decimal(percent), fixed, minimum=minimum, volume_from=volume_from)
            for product, currency, percent, fixed, minimum, volume_from in rules
        ],
        list(catalogue.PRODUCTS),
        Actor.system(),
        note="Demo schedule",
    )
    db.session.commit()


def _ensure_platform_fee(tenant_id, percent: str) -> None:
    with platform_scope(db.session):
        if schedules.platform_fee_in_force(tenant_id) is None:
            schedules.set_platform_fee(tenant_id, percent, Actor.system())
            db.session.commit()


def _ensure_risk(tenant_id, rules, currency: str) -> None:
    """A couple of risk rules in the tenant's currency, so the console's Risk pages have something to show."""
    if risk_rules.rules_of(tenant_id):
        return
    for rule in rules:
        risk_rules.create(tenant_id, risk_rules.RuleInput(currency=currency, **rule), Actor.system())


def _ensure_payments(tenant_id, owner_email: str, currency: str, held_amount: int | None = None) -> None:
    """A few test payments for the first merchant, so its dashboard has something to show (and, with
    `held_amount`, one a risk rule holds for review)."""
    owner = db.session.execute(
        sa.select(User).where(User.tenant_id == tenant_id, User.email == owner_email)
    ).scalar_one()
    ctx = intents.MerchantContext(tenant_id, owner.merchant_id, livemode=False)
    if db.session.execute(sa.select(PaymentIntent.id).where(PaymentIntent.merchant_id == owner.merchant_id)).first():
        return
    for amount, method in ((1250, "pm_card_visa"), (4800, "pm_card_mastercard"), (990, "pm_card_visa")):
        intents.create(
            ctx, amount=amount, currency=currency, payment_method=method, confirm=True, description="Demo order"
        )
    # A declined demo payment is the point: the dashboard shows how a decline looks.
    with contextlib.suppress(PaymentError):
        intents.create(
            ctx,
            amount=3100,
            currency=currency,
            payment_method="pm_card_chargeDeclined",
            confirm=True,
            description="Demo order (declined card)",
        )
    if held_amount:
        intents.create(
            ctx,
            amount=held_amount,
            currency=currency,
            payment_method="pm_card_visa",
            confirm=True,
            description="Demo order (held for review)",
        )


def _merchant_of(tenant_id, owner_email: str):
    return db.session.execute(
        sa.select(User.merchant_id).where(User.tenant_id == tenant_id, User.email == owner_email)
    ).scalar_one()


def _ensure_catalogue(tenant_id, owner_email: str, currency: str, entry) -> None:
    """Charge items, a 10 % coupon, a payment link of both items and a POS terminal."""
    merchant_id = _merchant_of(tenant_id, owner_email)
    if catalog.active_items(tenant_id, merchant_id):
        return
    items = [
        catalog.create_item(
            tenant_id, merchant_id, catalog.ChargeItemInput(name, price, currency, unit=unit), set(), Actor.system()
        )
        for name, unit, price in entry["items"]
    ]
    coupons.create_coupon(
        tenant_id, merchant_id, coupons.CouponInput(entry["coupon"], "percent", percent_off="10"), Actor.system()
    )
    links.create_link(
        tenant_id,
        merchant_id,
        links.LinkInput(
            "Starter pack",
            items=[
                links.LinkItemInput(items[0].id, quantity=1, adjustable=True, min_quantity=1, max_quantity=5),
                links.LinkItemInput(items[1].id, quantity=1),
            ],
        ),
        Actor.system(),
    )
    terminals.register(
        tenant_id,
        merchant_id,
        name="Front counter",
        kind="pos",
        serial_number=f"DEMO-{entry['spec'].slug.upper()}-001",
        location="Shop floor",
        mode="test",
        actor=Actor.system(),
    )


def _demo_document() -> bytes:
    """A small PNG standing in for a scanned document."""
    image = Image.new("RGB", (400, 260), (245, 245, 240))
    image.paste((30, 64, 175), (0, 0, 400, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ensure_applicant(tenant_id, name: str, owner_email: str, iban: str, country: str) -> None:
    """A merchant that signed up, filled its profile, uploaded its documents and waits for review."""
    if db.session.execute(sa.select(User.id).where(User.tenant_id == tenant_id, User.email == owner_email)).first():
        return
    started = signup.start(tenant_id, name, owner_email, PASSWORD, None)
    owner = signup.verify(started.signup, None)
    actor = Actor(kind="user", id=owner.id, email=owner.email)
    profiles.save(
        tenant_id,
        owner.merchant_id,
        profiles.ProfileInput(
            legal_name=f"{name} Ltd",
            registration_number="HRB 123456",
            legal_representative="Alex Example",
            address="1 Demo Street, Demo City",
            country=country,
            monthly_volume="25000.00",
            volume_currency="USD",
            bank_holder_name=f"{name} Ltd",
            bank_account=iban,
            bank_country=country,
        ),
        actor,
    )
    for kind in review.REQUIRED_DOCUMENTS:
        documents.upload(
            tenant_id,
            owner.merchant_id,
            kind,
            f"{kind}.png",
            _demo_document(),
            upload_dir=current_app.config["UPLOAD_DIR"],
            max_bytes=current_app.config["KYC_DOCUMENT_MAX_BYTES"],
            actor=actor,
        )
    review.submit(tenant_id, owner.merchant_id, actor)


def _ensure_password(tenant_id, email: str) -> None:
    user = db.session.execute(sa.select(User).where(User.tenant_id == tenant_id, User.email == email)).scalar_one()
    if not user.has_password:
        accounts.set_password(user, PASSWORD)
        db.session.commit()


def print_logins() -> None:
    with platform_scope(db.session):
        lines = [
            f"  platform console  {platform_base_url()}/login   {PLATFORM_ADMIN} / {PASSWORD}",
            f"  {'':<16}  two-factor code: add the key {PLATFORM_ADMIN_TOTP_SECRET} to an authenticator app, or run",
            f"  {'':<16}  .venv/bin/python -c "
            f"\"import pyotp; print(pyotp.TOTP('{PLATFORM_ADMIN_TOTP_SECRET}').now())\"",
        ]
        for entry in TENANTS:
            spec = entry["spec"]
            tenant = db.session.execute(sa.select(Tenant).where(Tenant.slug == spec.slug)).scalar_one()
            base = tenant_base_url(tenant)
            lines.append(f"  {tenant.name:<16}  {base}/login   {spec.admin_email} / {PASSWORD}  (tenant admin)")
            for _name, owner in entry["merchants"]:
                lines.append(f"  {'':<16}  {base}/login   {owner} / {PASSWORD}  (merchant owner)")
            applicant = entry["applicant"][1]
            lines.append(f"  {'':<16}  {base}/login   {applicant} / {PASSWORD}  (applicant, waiting for KYC review)")
    click.echo("Demo logins:\n" + "\n".join(lines))
