"""Payment links: the merchant creates one (fixed amount or charge items), gets its URL and QR code;
a payer opens it on the tenant's host, applies a coupon, sees the lines and total recomputed by the
server, and continues to the hosted checkout with a PaymentIntent of exactly that total. Expired,
deactivated and used-up links say so (410) and create nothing."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import segno
import sqlalchemy as sa
from pages import body, signed_in, table, text
from PIL import Image

from billing import catalog, coupons
from billing.catalog import ChargeItemInput
from billing.coupons import CouponInput
from core.db import db
from payments import intents, links, orders
from payments.intents import MerchantContext
from payments.links import LinkInput, LinkItemInput
from payments.models import PaymentIntent
from payments.order_models import Order, PaymentLink
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent

OWNER = "owner@studio.example.com"


@pytest.fixture
def studio(app, make):
    """A merchant with two charge items (a class, a mat), a 10 % coupon, and a USD card channel."""
    tenant = make.tenant("acme", name="Acme Pay")
    merchant = make.merchant(tenant, "Lotus Studio", OWNER)
    make.channel_account(tenant.id)
    with app.app_context(), tenant_context(db.session, tenant.id):
        lesson = catalog.create_item(
            tenant.id, merchant, ChargeItemInput("Yoga class", "18.50", "USD", unit="hour"), {"card"}, Actor.system()
        )
        mat = catalog.create_item(
            tenant.id, merchant, ChargeItemInput("Mat rental", "2.25", "USD"), {"card"}, Actor.system()
        )
        coupons.create_coupon(
            tenant.id, merchant, CouponInput("NAMASTE", "percent", percent_off="10", max_per_payer=1), Actor.system()
        )
        ids = {"lesson": lesson.id, "mat": mat.id}
        db.session.remove()
    return tenant, merchant, ids


def _link(app, tenant, merchant, **fields) -> str:
    with app.app_context(), tenant_context(db.session, tenant.id):
        link = links.create_link(tenant.id, merchant, LinkInput(**{"name": "Class pass", **fields}), Actor.system())
        link_id = link.id
        db.session.remove()
    return link_id


def _items_link(app, studio, **fields):
    tenant, merchant, ids = studio
    items = [
        LinkItemInput(ids["lesson"], quantity=2, adjustable=True, min_quantity=1, max_quantity=10),
        LinkItemInput(ids["mat"], quantity=1),
    ]
    return _link(app, tenant, merchant, items=items, **fields)


def _count(app, tenant, model) -> int:
    with app.app_context(), tenant_context(db.session, tenant.id):
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_payer_applies_a_coupon_and_continues_to_the_checkout(app, site, studio):
    tenant, merchant, _ = studio
    link_id = _items_link(app, studio)
    payer = site(tenant.host)
    page = payer.get(f"/checkout/link/{link_id}")
    assert page.status_code == 200
    html = body(page)
    assert "Lotus Studio" in html and "Class pass" in html
    # 2 × 18.50 + 2.25 = 39.25
    assert text(re.search(r'id="order-total">(.*?)<', html).group(1)) == "39.25 USD"
    assert 'for="email"' in html and 'for="coupon"' in html and 'for="quantity-1"' in html

    url = f"/checkout/link/{link_id}"
    applied = payer.submit(url, {"action": "apply", "coupon": "namaste", "quantity-1": "3", "email": ""})
    assert applied.status_code == 200
    lines = text(re.search(r'<table class="order" id="order-lines">(.*?)</table>', body(applied), re.S).group(1))
    # 3 × 18.50 + 2.25 = 57.75; 10 % = 5.775 -> 5.78 (half-up once); 51.97
    assert "55.50 USD" in lines and "2.25 USD" in lines and "-5.78 USD" in lines and "51.97 USD" in lines
    assert _count(app, tenant, PaymentIntent) == 0  # applying writes nothing

    paid = payer.submit(url, {"action": "pay", "coupon": "NAMASTE", "quantity-1": "3", "email": "ann@example.com"})
    assert paid.status_code == 303
    location = paid.headers["Location"]
    match = re.fullmatch(r"/checkout/(pi_\w+)\?client_secret=(pi_\w+_secret_\w+)", location)
    assert match, location
    with app.app_context(), tenant_context(db.session, tenant.id):
        pi = db.session.get(PaymentIntent, (tenant.id, match.group(1)))
        assert (pi.amount, pi.currency, pi.client_secret, pi.status) == (
            5197,
            "USD",
            match.group(2),
            "requires_payment_method",
        )
        assert pi.payer_details == {"receipt_email": "ann@example.com"}
        shown = [(line.description, line.quantity, line.amount) for line in orders.lines_of(tenant.id, pi.id)]
        assert shown == [("Yoga class", 3, 5550), ("Mat rental", 1, 225), ("Coupon NAMASTE (10% off)", 1, -578)]
        assert orders.order_of(tenant.id, pi.id).payment_link_id == link_id
        db.session.remove()

    # The coupon is once per payer: the same payer is told so next to the field, nothing is created.
    again = payer.submit(url, {"action": "pay", "coupon": "NAMASTE", "email": "ANN@example.com"})
    assert again.status_code == 422
    assert re.search(r'id="coupon-error" class="error">You have already used the coupon NAMASTE', body(again))
    assert 'value="ANN@example.com"' in body(again)
    assert _count(app, tenant, PaymentIntent) == 1


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"email": ""}, "email", "Give your e-mail"),
        ({"email": "not-an-email"}, "email", "Invalid email address"),
        ({"coupon": "NOPE"}, "coupon", "is not valid"),
        ({"quantity-1": "11"}, None, "between 1 and 10"),
    ],
)
def test_what_cannot_be_paid_is_said_and_nothing_is_created(app, site, studio, form, field, message):
    tenant, _, _ = studio
    link_id = _items_link(app, studio)
    payer = site(tenant.host)
    response = payer.submit(f"/checkout/link/{link_id}", {"action": "pay", "email": "bo@example.com", **form})
    assert response.status_code == 422
    html = body(response)
    if field:
        assert re.search(rf'id="{field}-error" class="error">[^<]*{re.escape(message)}', html), html
    else:
        assert message in html
    assert _count(app, tenant, PaymentIntent) == 0


def test_a_fixed_amount_link(app, site, studio):
    tenant, merchant, _ = studio
    link_id = _link(app, tenant, merchant, name="Donation", amount="25", currency="usd", allow_coupons=False)
    payer = site(tenant.host)
    html = body(payer.get(f"/checkout/link/{link_id}"))
    assert "25.00 USD" in html and 'for="coupon"' not in html
    response = payer.submit(f"/checkout/link/{link_id}", {"action": "pay", "email": "cy@example.com"})
    assert response.status_code == 303
    with app.app_context(), tenant_context(db.session, tenant.id):
        assert db.session.scalar(sa.select(PaymentIntent.amount)) == 2500


def _expire(app, tenant, link_id):
    with app.app_context(), tenant_context(db.session, tenant.id):
        db.session.execute(
            sa.update(PaymentLink).where(PaymentLink.id == link_id).values(expires_at=datetime.now(UTC) - timedelta(1))
        )
        db.session.commit()


def test_expired_inactive_and_used_up_links_answer_410_and_create_nothing(app, site, studio):
    tenant, merchant, _ = studio
    payer = site(tenant.host)

    expired = _link(app, tenant, merchant, amount="5", currency="USD", expires_at=datetime.now(UTC) + timedelta(1))
    _expire(app, tenant, expired)
    response = payer.get(f"/checkout/link/{expired}")
    assert response.status_code == 410 and "This payment link has expired." in body(response)

    off = _link(app, tenant, merchant, amount="5", currency="USD")
    with app.app_context(), tenant_context(db.session, tenant.id):
        links.set_active(links.get_link(tenant.id, merchant, off), False, Actor.system())
        db.session.remove()
    response = payer.get(f"/checkout/link/{off}")
    assert response.status_code == 410 and "switched this payment link off" in body(response)

    once = _link(app, tenant, merchant, amount="5", currency="USD", max_payments=1)
    first = payer.submit(f"/checkout/link/{once}", {"action": "pay", "email": "d@example.com"})
    second = payer.submit(f"/checkout/link/{once}", {"action": "pay", "email": "e@example.com"})
    assert first.status_code == second.status_code == 303  # opened, not yet paid: the link stays open
    intent_id = first.headers["Location"].split("/")[2].split("?")[0]
    with app.app_context(), tenant_context(db.session, tenant.id):
        intents.confirm_intent(MerchantContext(tenant.id, merchant, False), intent_id, "pm_card_visa")
        db.session.remove()
    response = payer.submit(f"/checkout/link/{once}", {"action": "pay", "email": "f@example.com"}, form_page="/login")
    assert response.status_code == 410 and "used as often as the merchant allows" in body(response)
    assert payer.get(f"/checkout/link/{once}").status_code == 410
    assert _count(app, tenant, Order) == 2

    assert payer.get("/checkout/link/plink_nothing").status_code == 404


def test_a_link_whose_item_was_deactivated_cannot_be_paid(app, site, studio):
    tenant, merchant, ids = studio
    link_id = _items_link(app, studio)
    with app.app_context(), tenant_context(db.session, tenant.id):
        catalog.set_active(catalog.get_item(tenant.id, merchant, ids["mat"]), False, Actor.system())
        db.session.remove()
    assert site(tenant.host).get(f"/checkout/link/{link_id}").status_code == 410


def test_another_tenants_link_is_not_found_on_this_host(app, site, studio, make):
    link_id = _items_link(app, studio)
    other = make.tenant("beta")
    assert site(other.host).get(f"/checkout/link/{link_id}").status_code == 404


# --- the merchant's side ---------------------------------------------------------------------------


def test_the_owner_creates_a_link_and_gets_its_url_and_qr_code(app, site, studio):
    tenant, merchant, ids = studio
    owner = signed_in(site, tenant, OWNER)
    form = owner.get("/merchant/payment-links/new")
    assert form.status_code == 200 and "Yoga class · 18.50 USD / hour" in body(form)
    response = owner.submit(
        "/merchant/payment-links/new",
        {
            "name": "Morning class",
            "mode": "test",
            "kind": "items",
            "currency": "",
            "items-0-charge_item": str(ids["lesson"]),
            "items-0-quantity": "1",
            "items-0-adjustable": "y",
            "items-0-max_quantity": "5",
            "items-1-charge_item": str(ids["mat"]),
            "items-1-quantity": "1",
            "max_payments": "20",
            "allow_coupons": "y",
        },
    )
    assert response.status_code == 302, body(response)
    detail = owner.get(response.headers["Location"])
    html = body(detail)
    link_url = re.search(r'id="link-url">([^<]+)<', html).group(1)
    assert re.fullmatch(r"http://acme\.localhost/checkout/link/plink_\w+", link_url)
    assert "payer chooses 1–5" in text(html) and "0 of at most 20" in text(html)
    link_id = link_url.rsplit("/", 1)[1]

    png = owner.get(f"/merchant/payment-links/{link_id}/qr.png?download=1")
    assert png.mimetype == "image/png" and "attachment" in png.headers["Content-Disposition"]
    image = Image.open(io.BytesIO(png.data))
    assert image.size[0] == image.size[1] >= 200
    svg = owner.get(f"/merchant/payment-links/{link_id}/qr.svg")
    assert svg.mimetype == "image/svg+xml" and b"<svg" in svg.data
    # The QR code holds the link's address: the same code segno draws for that URL.
    expected = io.BytesIO()
    segno.make(link_url, error="m").save(expected, kind="png", scale=10, border=4)
    assert png.data == expected.getvalue()

    listed = text(table(body(owner.get("/merchant/payment-links")), "payment-link-list"))
    assert "Morning class" in listed and "0 / 20" in listed
    owner.submit(f"/merchant/payment-links/{link_id}/active", {"active": "0"}, form_page="/merchant/payment-links")
    assert "deactivated" in text(body(owner.get(f"/merchant/payment-links/{link_id}")))
    with app.app_context(), tenant_context(db.session, tenant.id):
        actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.object_id == link_id)).all()
    assert sorted(actions) == ["payment_link.created", "payment_link.deactivated"]


def test_a_refused_link_form_keeps_what_was_typed(app, site, studio):
    tenant, _, _ = studio
    owner = signed_in(site, tenant, OWNER)
    response = owner.submit(
        "/merchant/payment-links/new",
        {"name": "Gift", "mode": "test", "kind": "amount", "amount": "1.234", "currency": "USD"},
    )
    assert response.status_code == 422
    html = body(response)
    assert re.search(r'id="amount-error" class="error">USD amounts have at most 2 decimals', html)
    assert 'value="Gift"' in html and 'value="1.234"' in html
    response = owner.submit("/merchant/payment-links/new", {"name": "Gift", "mode": "test", "kind": "items"})
    assert response.status_code == 422 and "Choose at least one charge item" in body(response)
    assert _count(app, tenant, PaymentLink) == 0


def test_staff_see_links_but_cannot_create_or_deactivate(app, site, studio, make):
    tenant, merchant, _ = studio
    make.user(tenant, "staff@studio.example.com", "staff", merchant_id=merchant)
    link_id = _items_link(app, studio)
    staff = signed_in(site, tenant, "staff@studio.example.com")
    assert staff.get("/merchant/payment-links").status_code == 200
    assert staff.get(f"/merchant/payment-links/{link_id}").status_code == 200
    assert staff.get(f"/merchant/payment-links/{link_id}/qr.svg").status_code == 200
    assert staff.get("/merchant/payment-links/new").status_code == 403
    response = staff.submit(f"/merchant/payment-links/{link_id}/active", {"active": "0"}, form_page="/merchant/")
    assert response.status_code == 403
    with app.app_context(), tenant_context(db.session, tenant.id):
        assert db.session.scalar(sa.select(PaymentLink.active)) is True


def test_a_link_sends_the_payer_back_to_the_merchants_page_after_paying(app, site, studio):
    tenant, _, _ = studio
    owner = signed_in(site, tenant, OWNER)
    form = {"name": "Gift", "mode": "test", "kind": "amount", "amount": "5", "currency": "USD"}
    refused = owner.submit("/merchant/payment-links/new", {**form, "after_payment_url": "javascript:alert(1)"})
    assert refused.status_code == 422
    html = body(refused)
    assert re.search(
        r'id="after_payment_url-error" class="error">Give a whole web address starting with https://', html
    )
    assert 'value="javascript:alert(1)"' in html and _count(app, tenant, PaymentLink) == 0
    created = owner.submit(
        "/merchant/payment-links/new", {**form, "after_payment_url": "https://lotus.example.com/thanks"}
    )
    assert created.status_code == 302
    link_page = body(owner.get(created.headers["Location"]))
    assert 'href="https://lotus.example.com/thanks"' in link_page
    link_id = urlsplit(created.headers["Location"]).path.rsplit("/", 1)[-1]
    payer = site(tenant.host)
    paying = payer.submit(f"/checkout/link/{link_id}", {"action": "pay", "email": "gi@example.com"})
    assert paying.status_code == 303
    with app.app_context(), tenant_context(db.session, tenant.id):
        assert db.session.scalar(sa.select(PaymentIntent.return_url)) == "https://lotus.example.com/thanks"


def test_the_links_list_finds_a_link_by_its_id_or_name(app, site, studio):
    tenant, merchant, _ = studio
    pass_id = _link(app, tenant, merchant, name="Class pass", amount="25", currency="usd")
    gift_id = _link(app, tenant, merchant, name="Gift card", amount="10", currency="usd")
    owner = signed_in(site, tenant, OWNER)

    def found(query: str) -> set[str]:
        html = body(owner.get("/merchant/payment-links", query_string={"q": query}))
        return {ident for ident in (pass_id, gift_id) if ident in html}

    assert found(pass_id) == {pass_id}
    assert found(gift_id[-8:]) == {gift_id}
    assert found("gift") == {gift_id}
    assert found("plink_") == {pass_id, gift_id}
