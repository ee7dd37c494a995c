"""A payment link from two charge items and a coupon, paid on a phone through the hosted checkout
with the sandbox channel, then seen in the merchant's payments and the tenant's reports; and the
same checkout for a tenant whose portal speaks Chinese.

The merchant builds the items, the coupon and the link in the dashboard (desktop); the payer opens
the link on a phone-sized screen, applies the coupon, pays with the sandbox's test card. The amount
the payer is shown at every step is the amount charged, to the minor unit:
2 x 12.00 (yoga class) + 1 x 3.50 (mat) = 27.50, 10% off = 2.75, total 24.75 USD.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import force_locale, gettext
from playwright.sync_api import expect

from billing import catalog, coupons
from core.db import db
from payments import links
from portal.i18n import format_amount
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tests.browser.conftest import fits_the_screen, sign_in
from tests.conftest import PASSWORD

OWNER = "owner@yogaloft.example.com"


def _paid(owner_engine) -> list[tuple]:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT pi.id, pi.status, pi.amount, pi.amount_received, o.subtotal, o.discount, o.coupon_code"
                " FROM payment_intents pi JOIN orders o ON o.tenant_id = pi.tenant_id AND o.payment_intent_id = pi.id"
            )
        ).all()


def _pay_on_the_phone(phone, url: str, artifacts, prefix: str, texts: dict[str, str]) -> str:
    """Open the link, apply the coupon, continue, pay with the test card; returns the reference."""
    phone.goto(url)
    expect(phone.locator("#order-total")).to_have_text(texts["before"])
    phone.get_by_label(texts["coupon_label"], exact=True).fill("welcome10")
    phone.get_by_role("button", name=texts["apply"], exact=True).click()
    expect(phone.locator("#order-total")).to_have_text(texts["total"])
    expect(phone.locator(".discount-line")).to_contain_text(texts["discount"])
    phone.get_by_label(texts["email_label"], exact=True).fill("payer@example.com")
    assert fits_the_screen(phone)
    phone.screenshot(path=str(artifacts / f"{prefix}-1-link-with-coupon.png"), full_page=True)
    phone.get_by_role("button", name=texts["continue"], exact=True).click()

    # The hosted checkout: the order's lines, the discount and the same total.
    expect(phone.locator("#co-total")).to_have_text(texts["total"])
    lines = phone.locator("#co-lines tbody tr")
    expect(lines).to_have_count(3)
    expect(lines.nth(0)).to_contain_text("Yoga class")
    expect(lines.nth(0)).to_contain_text(texts["classes"])
    expect(lines.nth(1)).to_contain_text("Mat rental")
    expect(lines.nth(2)).to_contain_text(texts["discount"])
    assert fits_the_screen(phone)
    phone.screenshot(path=str(artifacts / f"{prefix}-2-checkout.png"), full_page=True)
    phone.get_by_label(texts["visa"], exact=True).check()
    phone.get_by_role("button", name=texts["pay"], exact=True).click()
    expect(phone.locator("#co-result-title")).to_have_text(texts["success"])
    expect(phone.locator("#co-paid-amount")).to_have_text(texts["total"])
    phone.screenshot(path=str(artifacts / f"{prefix}-3-paid.png"), full_page=True)
    return phone.locator("#co-reference").inner_text()


def _texts(app, locale: str) -> dict[str, str]:
    """What the payer reads, in `locale`, from the platform's own catalogue and formats."""
    with app.test_request_context(), force_locale(locale):
        total = format_amount(2475, "USD")
        return {
            "before": format_amount(2750, "USD"),
            "total": total,
            "discount": format_amount(-275, "USD"),
            "classes": format_amount(2400, "USD"),
            "coupon_label": gettext("Coupon code"),
            "email_label": gettext("E-mail"),
            "apply": gettext("Apply"),
            "continue": gettext("Continue to payment"),
            "visa": gettext("%(brand)s test card — succeeds", brand="Visa"),
            "pay": gettext("Pay %(amount)s", amount=total),
            "success": gettext("Payment successful"),
        }


def test_a_payment_link_with_items_and_a_coupon_is_paid_on_a_phone(
    app, make, live_server, page, phone, artifacts, owner_engine
):
    acme = make.tenant("acme", name="Acme Pay")
    make.merchant(acme, "Yoga Loft", OWNER)
    make.channel_account(acme.id)

    # The merchant builds two charge items, a coupon and a link from the items.
    sign_in(page, live_server.url(acme.host, "/login"), OWNER, PASSWORD)
    for name, unit, price in (("Yoga class", "class", "12.00"), ("Mat rental", "day", "3.50")):
        page.goto(live_server.url(acme.host, "/merchant/charge-items/new"))
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Unit", exact=True).fill(unit)
        page.get_by_label("Unit price", exact=True).fill(price)
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator(".flash-success")).to_be_visible()
    page.goto(live_server.url(acme.host, "/merchant/coupons/new"))
    page.get_by_label("Code", exact=True).fill("WELCOME10")
    page.get_by_label("Discount", exact=True).select_option("percent")
    page.get_by_label("Percentage off", exact=True).fill("10")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".flash-success")).to_be_visible()
    page.goto(live_server.url(acme.host, "/merchant/payment-links/new"))
    page.get_by_label("Name", exact=True).fill("Starter pack")
    page.locator("#items-0-charge_item").select_option(label="Yoga class · 12.00 USD / class")
    page.locator("#items-0-quantity").fill("2")
    page.locator("#items-1-charge_item").select_option(label="Mat rental · 3.50 USD / day")
    page.locator("#items-1-quantity").fill("1")
    page.get_by_role("button", name="Create the link", exact=True).click()
    expect(page.locator("#link-qr")).to_be_visible()
    page.screenshot(path=str(artifacts / "paylink-0-merchant-link.png"), full_page=True)
    url = page.locator("#link-url").inner_text()

    reference = _pay_on_the_phone(phone, url, artifacts, "paylink", _texts(app, "en"))
    assert [
        (r.id, r.status, r.amount, r.amount_received, r.subtotal, r.discount, r.coupon_code)
        for r in _paid(owner_engine)
    ] == [(reference, "succeeded", 2475, 2475, 2750, 275, "WELCOME10")]

    # The merchant sees the payment in its list.
    page.goto(live_server.url(acme.host, "/merchant/payments"))
    row = page.locator("#payment-list tbody tr").filter(has_text=reference)
    expect(row).to_contain_text("24.75 USD")
    expect(row).to_contain_text("succeeded")

    # The tenant's staff see it in the reports: chart and its table.
    admin = page.context.browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    try:
        staff = admin.new_page()
        sign_in(staff, live_server.url(acme.host, "/login"), acme.admin_email, PASSWORD)
        staff.goto(live_server.url(acme.host, "/console/reports"))
        usd = staff.locator("#report-USD")
        expect(usd.locator("figure.chart svg").first).to_be_visible()
        expect(staff.locator("#report-rows-USD")).to_contain_text("24.75")
        staff.screenshot(path=str(artifacts / "paylink-4-tenant-chart.png"), full_page=True)
    finally:
        admin.close()


def test_the_same_checkout_in_chinese(app, make, live_server, new_phone, artifacts, owner_engine):
    acme = make.tenant("acme", name="Acme Pay")
    merchant = make.merchant(acme, "Yoga Loft", OWNER)
    make.channel_account(acme.id)
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET default_locale = 'zh' WHERE id = :t"), {"t": acme.id})
    owner = Actor.system()
    with app.app_context(), tenant_context(db.session, acme.id):
        yoga = catalog.create_item(
            acme.id, merchant, catalog.ChargeItemInput("Yoga class", "12.00", "USD", unit="class"), set(), owner
        )
        mat = catalog.create_item(
            acme.id, merchant, catalog.ChargeItemInput("Mat rental", "3.50", "USD", unit="day"), set(), owner
        )
        coupons.create_coupon(acme.id, merchant, coupons.CouponInput("WELCOME10", "percent", percent_off="10"), owner)
        link = links.create_link(
            acme.id,
            merchant,
            links.LinkInput(
                "Starter pack",
                items=[links.LinkItemInput(yoga.id, quantity=2), links.LinkItemInput(mat.id, quantity=1)],
            ),
            owner,
        )
        link_id = link.id
        db.session.remove()

    texts = _texts(app, "zh")
    english = _texts(app, "en")
    # The page must really be in Chinese: each label differs from its English text.
    assert all(texts[key] != english[key] for key in ("apply", "continue", "visa", "pay", "success"))
    phone = new_phone("zh-CN")
    reference = _pay_on_the_phone(
        phone, live_server.url(acme.host, f"/checkout/link/{link_id}"), artifacts, "paylink-zh", texts
    )
    expect(phone.locator("html")).to_have_attribute("lang", "zh-CN")
    assert [(r.id, r.status, r.amount_received) for r in _paid(owner_engine)] == [(reference, "succeeded", 2475)]
