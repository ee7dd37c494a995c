"""The merchant's charge items and coupons pages: create, edit, deactivate, search, filter, pages;
the owner writes, staff read; forms keep what was typed when refused; every change is audited."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from pages import body, signed_in, table, text

from billing import catalog
from billing.catalog import ChargeItemInput
from billing.models import ChargeItem, Coupon
from core.db import db
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent

OWNER = "owner@coffee.example.com"
STAFF = "staff@coffee.example.com"


@pytest.fixture
def shop(make):
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", OWNER)
    make.user(tenant, STAFF, "staff", merchant_id=merchant)
    other = make.merchant(tenant, "Bikes", "owner@bikes.example.com")
    return tenant, merchant, other


def _items(app, tenant):
    with app.app_context(), tenant_context(db.session, tenant.id):
        rows = db.session.execute(sa.select(ChargeItem).order_by(ChargeItem.created_at)).scalars().all()
        db.session.expunge_all()
        return rows


ITEM = {"name": "Yoga class", "unit": "hour", "unit_price": "18.50", "currency": "usd", "tax_inclusive": "y"}


def test_the_owner_creates_edits_and_deactivates_a_charge_item(app, site, shop):
    tenant, merchant, _ = shop
    owner = signed_in(site, tenant, OWNER)
    response = owner.submit(
        "/merchant/charge-items/new", {**ITEM, "payment_method_types": ["card", "alipay_qr"]}, follow_redirects=True
    )
    assert response.status_code == 200
    listed = text(table(body(response), "charge-item-list"))
    assert "Yoga class" in listed and "18.50 USD / hour" in listed and "card, alipay_qr" in listed
    (item,) = _items(app, tenant)
    assert (item.unit_amount, item.currency, item.tax_inclusive, item.active) == (1850, "USD", True, True)

    page = body(owner.get(f"/merchant/charge-items/{item.id}"))
    assert 'value="18.50"' in page
    owner.submit(f"/merchant/charge-items/{item.id}", {**ITEM, "unit_price": "20", "tax_inclusive": ""})
    (item,) = _items(app, tenant)
    assert (item.unit_amount, item.tax_inclusive, item.payment_method_types) == (2000, False, [])

    owner.submit(f"/merchant/charge-items/{item.id}/active", {"active": "0"}, form_page="/merchant/charge-items")
    (item,) = _items(app, tenant)
    assert item.active is False
    with app.app_context(), tenant_context(db.session, tenant.id):
        actions = db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.object_id == str(item.id)).order_by(AuditEvent.created_at)
        ).all()
        changes = db.session.scalars(
            sa.select(AuditEvent.changes).where(AuditEvent.action == "charge_item.updated")
        ).one()
    assert actions == ["charge_item.created", "charge_item.updated", "charge_item.deactivated"]
    assert changes["unit_amount"] == {"before": 1850, "after": 2000}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("unit_price", "18.505", "at most 2 decimals"),
        ("unit_price", "abc", "is not an amount"),
        ("currency", "ZZZ", "not an ISO 4217 currency"),
        ("name", "", "This field is required."),
    ],
)
def test_a_refused_form_keeps_what_was_typed_with_the_error_next_to_the_field(app, site, shop, field, value, message):
    tenant, _, _ = shop
    owner = signed_in(site, tenant, OWNER)
    response = owner.submit("/merchant/charge-items/new", {**ITEM, field: value})
    assert response.status_code == 422
    html = body(response)
    assert re.search(rf'id="{field}-error" class="error">[^<]*{re.escape(message)}', html), html
    assert 'value="Yoga class"' in html or field == "name"
    assert 'value="hour"' in html
    assert _items(app, tenant) == []


def test_staff_read_but_do_not_write(app, site, shop):
    tenant, merchant, _ = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        item = catalog.create_item(tenant.id, merchant, ChargeItemInput("Tea", "3", "USD"), {"card"}, Actor.system())
        item_id = item.id
        db.session.remove()
    staff = signed_in(site, tenant, STAFF)
    listed = body(staff.get("/merchant/charge-items"))
    assert "Tea" in listed and "New charge item" not in listed and "Deactivate" not in listed
    page = staff.get(f"/merchant/charge-items/{item_id}")
    assert page.status_code == 200 and "<fieldset disabled>" in body(page)
    assert staff.get("/merchant/charge-items/new").status_code == 403
    assert staff.submit(f"/merchant/charge-items/{item_id}", ITEM, form_page="/merchant/").status_code == 403
    response = staff.submit(f"/merchant/charge-items/{item_id}/active", {"active": "0"}, form_page="/merchant/")
    assert response.status_code == 403
    assert _items(app, tenant)[0].active is True


def test_search_filter_and_keyset_pages(app, site, shop):
    tenant, merchant, other = shop
    with app.app_context(), tenant_context(db.session, tenant.id):
        for number in range(30):
            catalog.create_item(
                tenant.id,
                merchant,
                ChargeItemInput(f"Item {number:02d}", "1", "USD", active=number % 3 != 0),
                {"card"},
                Actor.system(),
            )
        catalog.create_item(tenant.id, other, ChargeItemInput("Item of Bikes", "1", "USD"), {"card"}, Actor.system())
        db.session.remove()
    owner = signed_in(site, tenant, OWNER)
    first = body(owner.get("/merchant/charge-items"))
    assert text(table(first, "charge-item-list")).count("USD / piece") == 25
    assert "Item of Bikes" not in first
    older = re.search(r'href="([^"]*after=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = text(table(body(owner.get(older)), "charge-item-list"))
    assert second.count("USD / piece") == 5 and "Item 00" in second and "Item 29" not in second
    inactive = text(table(body(owner.get("/merchant/charge-items?state=inactive")), "charge-item-list"))
    assert inactive.count("inactive") == 10
    found = text(table(body(owner.get("/merchant/charge-items?q=item+1")), "charge-item-list"))
    assert sorted(re.findall(r"Item \d\d", found)) == [f"Item {n}" for n in range(10, 20)]
    assert "No charge items match." in body(owner.get("/merchant/charge-items?q=%25_nothing"))


# --- coupons -------------------------------------------------------------------------------------

COUPON = {"code": "SUMMER10", "kind": "percent", "percent_off": "12.5", "currency": "", "min_amount": ""}


def test_the_owner_creates_a_coupon_sees_its_usage_and_deactivates_it(app, site, shop):
    tenant, _, _ = shop
    owner = signed_in(site, tenant, OWNER)
    response = owner.submit(
        "/merchant/coupons/new",
        {**COUPON, "max_redemptions": "100", "max_per_payer": "1", "expires_at": "2099-12-31T23:59"},
        follow_redirects=True,
    )
    listed = text(table(body(response), "coupon-list"))
    assert "SUMMER10" in listed and "12.5% off" in listed and "0 of 100 held, 0 paid" in listed
    assert "at most 1 per payer" in listed and "2099-12-31 23:59" in listed
    with app.app_context(), tenant_context(db.session, tenant.id):
        coupon = db.session.execute(sa.select(Coupon)).scalar_one()
        assert coupon.percent_off_bp == 1250
        coupon_id = coupon.id
        db.session.remove()
    page = body(owner.get(f"/merchant/coupons/{coupon_id}"))
    assert 'value="12.5"' in page and 'value="2099-12-31T23:59"' in page
    owner.submit(f"/merchant/coupons/{coupon_id}/active", {"active": "0"}, form_page="/merchant/coupons")
    assert "inactive" in text(table(body(owner.get("/merchant/coupons")), "coupon-list"))


def test_a_duplicate_code_is_refused_next_to_the_field(site, shop):
    tenant, _, _ = shop
    owner = signed_in(site, tenant, OWNER)
    owner.submit("/merchant/coupons/new", COUPON)
    response = owner.submit("/merchant/coupons/new", {**COUPON, "code": "summer10", "percent_off": "20"})
    assert response.status_code == 422
    html = body(response)
    assert re.search(r'id="code-error" class="error">You already have a coupon summer10', html)
    assert 'value="20"' in html  # what was typed is kept


def test_a_fixed_coupon_without_currency_is_refused(site, shop):
    tenant, _, _ = shop
    owner = signed_in(site, tenant, OWNER)
    response = owner.submit("/merchant/coupons/new", {**COUPON, "kind": "fixed", "amount_off": "5"})
    assert response.status_code == 422
    assert re.search(r'id="currency-error" class="error">A fixed amount needs its currency', body(response))
