"""Security headers (portal/security.py) on pages, the API and error pages; HSTS only over HTTPS;
the hosted checkout framed only by the sites its merchant allows (the merchant's settings page)."""

from __future__ import annotations

import re
from html import unescape

import pytest
import sqlalchemy as sa
from pages import body, signed_in

from core.db import db
from payments import intents
from tenants import api_keys, frame_domains
from tenants.audit import Actor
from tenants.isolation import tenant_context

OWNER = "owner@corner.example.com"
OTHER_OWNER = "owner@kiosk.example.com"


@pytest.fixture
def shop(app, make):
    tenant = make.tenant("acme", name="Acme Payments")
    merchant = make.merchant(tenant, "Corner Cafe", OWNER)
    kiosk = make.merchant(tenant, "Kiosk", OTHER_OWNER)
    make.channel_account(tenant.id)
    return {"tenant": tenant, "merchant": merchant, "kiosk": kiosk}


def new_intent(app, tenant_id, merchant_id) -> str:
    """The checkout URL of a new PaymentIntent of the merchant."""
    with app.app_context(), tenant_context(db.session, tenant_id):
        pi = intents.create(intents.MerchantContext(tenant_id, merchant_id, livemode=False), amount=500, currency="usd")
        url = f"/checkout/{pi.id}?client_secret={pi.client_secret}"
        db.session.remove()
    return url


def csp(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in (part.strip() for part in policy.split(";")) if d}


def assert_framed_nowhere(response) -> None:
    assert csp(response)["frame-ancestors"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"


def assert_common_headers(response) -> None:
    policy = csp(response)
    assert policy["default-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert "'unsafe-inline'" not in policy["script-src"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("same-origin", "no-referrer")
    assert "Strict-Transport-Security" not in response.headers  # plain http


def test_headers_on_a_console_page_the_api_and_an_error_page(app, site, shop):
    tenant = shop["tenant"]
    admin = signed_in(site, tenant, tenant.admin_email)
    page = admin.get("/console/")
    assert page.status_code == 200
    assert_common_headers(page)
    assert_framed_nowhere(page)

    with app.app_context():
        _, secret = api_keys.create_key(tenant.id, shop["merchant"], "test", "backend", Actor.system())
        db.session.remove()
    api = app.test_client().get(
        "/v1/payment_intents", base_url=f"http://{tenant.host}", headers={"Authorization": f"Bearer {secret}"}
    )
    assert api.status_code == 200
    assert_common_headers(api)
    assert_framed_nowhere(api)

    missing = admin.get("/console/no-such-page")
    assert missing.status_code == 404
    assert "Page not found" in body(missing)
    assert_common_headers(missing)
    assert_framed_nowhere(missing)


def test_hsts_only_over_https(app, site, shop):
    host = shop["tenant"].host
    plain = app.test_client().get("/login", base_url=f"http://{host}")
    assert "Strict-Transport-Security" not in plain.headers
    secure = app.test_client().get("/login", base_url=f"https://{host}")  # wsgi.url_scheme https
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_the_brand_preview_is_framed_only_by_the_console(site, shop):
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    preview = admin.get("/console/branding/preview")
    assert preview.status_code == 200
    assert csp(preview)["frame-ancestors"] == "'self'"
    assert preview.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_the_checkout_is_framed_only_by_the_merchants_sites(app, site, shop, owner_engine):
    tenant = shop["tenant"]
    corner_checkout = new_intent(app, tenant.id, shop["merchant"])
    kiosk_checkout = new_intent(app, tenant.id, shop["kiosk"])
    payer = site(tenant.host)
    # Until the merchant allows a site, nobody may frame its checkout.
    assert_framed_nowhere(payer.get(corner_checkout))

    owner = signed_in(site, tenant, OWNER)
    page = owner.get("/merchant/settings")
    assert page.status_code == 200
    saved = owner.submit(
        "/merchant/settings",
        {"frame_domains": "shop.example.com\r\nhttps://*.Example.org/\r\nhttps://pay.example.net:8443"},
    )
    assert saved.status_code == 302
    settings_page = body(owner.get("/merchant/settings"))
    assert "The settings are saved." in settings_page
    assert "https://shop.example.com\nhttps://*.example.org\nhttps://pay.example.net:8443" in settings_page

    checkout = payer.get(corner_checkout)
    assert checkout.status_code == 200
    assert (
        csp(checkout)["frame-ancestors"]
        == "https://shop.example.com https://*.example.org https://pay.example.net:8443"
    )
    assert "X-Frame-Options" not in checkout.headers
    assert checkout.headers["Referrer-Policy"] == "no-referrer"  # the checkout's own, stricter policy stays

    # Another merchant's checkout, the merchant's own dashboard: framed by nobody.
    assert_framed_nowhere(payer.get(kiosk_checkout))
    assert_framed_nowhere(owner.get("/merchant/settings"))

    with owner_engine.connect() as conn:
        changes = conn.execute(
            sa.text("SELECT changes FROM audit_events WHERE action = 'merchant.frame_domains_changed'")
        ).scalar_one()
    assert changes == {
        "frame_domains": {
            "before": [],
            "after": ["https://shop.example.com", "https://*.example.org", "https://pay.example.net:8443"],
        }
    }


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("http://shop.example.com", "'http://shop.example.com' is not an https site"),
        ("shop.example.com/checkout", "'shop.example.com/checkout' has a path"),
        ("https://shop.example.com/pay?x=1", "'https://shop.example.com/pay?x=1' has a path"),
        ("192.0.2.1", "'192.0.2.1' is not a host name"),
        ("shop.example.com; script-src *", "'shop.example.com;' is not a host name"),
        ("'self'", "''self'' is not a host name"),
        ("javascript:alert(1)", "is not"),
    ],
)
def test_a_bad_site_is_refused_with_a_message_and_the_form_keeps_the_input(site, shop, owner_engine, typed, message):
    owner = signed_in(site, shop["tenant"], OWNER)
    typed_all = f"good.example.com\n{typed}"
    refused = owner.submit("/merchant/settings", {"frame_domains": typed_all})
    assert refused.status_code == 422
    html = body(refused)
    assert message in unescape(html)
    textarea = unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", html, re.S).group(1))
    assert textarea.strip() == typed_all
    with owner_engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT frame_domains FROM merchants WHERE name = 'Corner Cafe'")).scalar_one()
        audited = conn.execute(
            sa.text("SELECT count(*) FROM audit_events WHERE action = 'merchant.frame_domains_changed'")
        ).scalar_one()
    assert stored == [] and audited == 0


def test_only_the_owner_edits_the_frame_sites(site, shop, make):
    make.user(shop["tenant"], "staff@corner.example.com", "staff", merchant_id=shop["merchant"])
    staff = signed_in(site, shop["tenant"], "staff@corner.example.com")
    assert staff.get("/merchant/settings").status_code == 403


def test_a_payment_link_page_is_framed_by_its_merchants_sites(app, site, shop):
    from payments import links
    from payments.links import LinkInput

    tenant = shop["tenant"]
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            frame_domains.set_allowed(tenant.id, shop["merchant"], "shop.example.com", Actor.system())
            corner = links.create_link(
                tenant.id, shop["merchant"], LinkInput(name="Coffee", amount="4.50", currency="usd"), Actor.system()
            ).id
            kiosk = links.create_link(
                tenant.id, shop["kiosk"], LinkInput(name="Tea", amount="3.00", currency="usd"), Actor.system()
            ).id
        db.session.remove()
    payer = site(tenant.host)
    page = payer.get(f"/checkout/link/{corner}")
    assert page.status_code == 200
    assert csp(page)["frame-ancestors"] == "https://shop.example.com"
    assert "X-Frame-Options" not in page.headers
    assert_framed_nowhere(payer.get(f"/checkout/link/{kiosk}"))


def test_the_stripe_checkout_admits_stripe_js_and_nothing_else_does(app, make, site):
    tenant = make.tenant("stripeco", name="Stripe Co")
    merchant = make.merchant(tenant, "Bakery", "owner@bakery.example.com")
    make.channel_account(
        tenant.id,
        name="Stripe",
        type="stripe",
        base_url="https://api.stripe.com",
        credentials={"secret_key": "sk_test_headers0123456789abcdef"},
        settings={"publishable_key": "pk_test_headers0123456789abcdef"},
    )
    payer = site(tenant.host)
    checkout = payer.get(new_intent(app, tenant.id, merchant))
    assert '<script src="https://js.stripe.com/v3/">' in body(checkout)
    policy = csp(checkout)
    assert policy["script-src"].split() == ["'self'", "https://js.stripe.com"]
    assert "https://api.stripe.com" in policy["connect-src"].split()
    assert "https://js.stripe.com" in policy["frame-src"].split()
    # The next page (the sign-in page) admits no Stripe script.
    assert "stripe" not in payer.get("/login").headers["Content-Security-Policy"]
