"""Terminals: a merchant registers a POS or face-pay device and gets a device key, shown once; the
device takes payments through the merchant API with that key, only payments and refunds; the
merchant's payments list and detail show which terminal took each payment."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from pages import body, signed_in, table, text

from core.db import db
from payments.models import PaymentAttempt, PaymentIntent
from tenants import api_keys
from tenants.audit import Actor

TERMINAL = {"name": "Till 1", "kind": "pos", "serial_number": "SN-0001", "location": "Main Street 1", "mode": "test"}
VISA = {"amount": "1500", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}
KEY_RE = re.compile(r'id="device-key" type="text" value="(dk_test_[A-Za-z0-9_-]{40})"')


@dataclass
class Shop:
    tenant: object
    merchant: object
    owner: object  # a signed-in client of the owner
    secret: str  # the merchant's own secret API key


@pytest.fixture
def shop(app, make, site):
    tenant = make.tenant("acme")
    make.channel_account(tenant.id, "Cards")
    make.channel_account(tenant.id, "Kiosk", products=["face_pay"], costs={"face_pay": {"percent": "1", "fixed": 0}})
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    make.user(tenant, "staff@coffee.example.com", "staff", merchant_id=merchant)
    with app.app_context():
        _, secret = api_keys.create_key(tenant.id, merchant, "test", "backend", Actor.system())
        db.session.remove()
    return Shop(tenant, merchant, signed_in(site, tenant, "owner@coffee.example.com"), secret)


def register(client, **fields) -> tuple[object, str]:
    response = client.submit("/merchant/terminals", {**TERMINAL, **fields})
    assert response.status_code == 200, body(response)
    match = KEY_RE.search(body(response))
    assert match, "no device key on the page"
    return response, match.group(1)


def api(site, shop: Shop, secret: str):
    client = site(shop.tenant.host)

    def call(method: str, path: str, data=None):
        return client.client.open(
            path, method=method, base_url=client.base_url, data=data, headers={"Authorization": f"Bearer {secret}"}
        )

    return call


def terminal_id(owner_engine, serial: str = "SN-0001") -> str:
    with owner_engine.connect() as conn:
        return conn.execute(sa.text("SELECT id FROM terminals WHERE serial_number = :s"), {"s": serial}).scalar_one()


def test_an_owner_registers_a_terminal_and_sees_its_key_once(shop, owner_engine):
    response, secret = register(shop.owner)
    assert response.headers["Cache-Control"] == "no-store"
    assert "shown only this once" in body(response)
    listing = body(shop.owner.get("/merchant/terminals"))
    rows = text(table(listing, "terminal-list"))
    assert "Till 1" in rows and "SN-0001" in rows and "Main Street 1" in rows
    assert f"dk_test_…{secret[-4:]}" in rows
    assert secret not in listing
    with owner_engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash, key_last4 FROM terminals")).one()
        audit = conn.execute(
            sa.text("SELECT action, changes::text FROM audit_events WHERE object_type = 'terminal'")
        ).one()
    assert stored.key_hash == api_keys.hash_secret(secret) and secret not in stored.key_hash
    assert audit.action == "terminal.registered" and secret not in audit[1]


def test_a_rejected_registration_keeps_what_was_typed(shop, owner_engine):
    register(shop.owner)
    response = shop.owner.submit("/merchant/terminals", {**TERMINAL, "name": "Till 2"})
    assert response.status_code == 422
    page = body(response)
    assert "A terminal with serial number SN-0001 is already registered." in page
    assert 'value="Till 2"' in page and 'value="Main Street 1"' in page
    response = shop.owner.submit("/merchant/terminals", {**TERMINAL, "serial_number": ""})
    assert response.status_code == 422
    assert "Give the serial number." in body(response)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM terminals")).scalar_one() == 1


def test_staff_see_the_terminals_but_cannot_register_one(shop, site, owner_engine):
    register(shop.owner)
    staff = signed_in(site, shop.tenant, "staff@coffee.example.com")
    page = staff.get("/merchant/terminals")
    assert page.status_code == 200 and "Till 1" in body(page)
    assert 'id="terminal-form"' not in body(page)
    response = staff.submit("/merchant/terminals", {**TERMINAL, "serial_number": "SN-9"})
    assert response.status_code == 403
    tid = terminal_id(owner_engine)
    assert staff.submit(f"/merchant/terminals/{tid}/deactivate", form_page="/merchant/").status_code == 403
    assert shop.owner.get("/merchant/terminals").status_code == 200
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM terminals")).scalar_one() == "active"


def test_a_terminal_takes_a_payment_that_shows_its_name(shop, site, owner_engine):
    _, secret = register(shop.owner)
    tid = terminal_id(owner_engine)
    device = api(site, shop, secret)
    created = device("POST", "/v1/payment_intents", VISA)
    assert created.status_code == 200, created.get_data(as_text=True)
    paid = created.get_json()
    assert paid["status"] == "succeeded" and paid["terminal"] == tid
    assert device("GET", f"/v1/payment_intents/{paid['id']}").get_json()["terminal"] == tid
    # The merchant's own backend takes another payment, with no terminal.
    backend = api(site, shop, shop.secret)
    other = backend("POST", "/v1/payment_intents", {**VISA, "amount": "2500"}).get_json()
    assert other["terminal"] is None

    listing = body(shop.owner.get("/merchant/payments"))
    rows = table(listing, "payment-list")
    assert paid["id"] in rows and other["id"] in rows
    plain = rows.replace("<code>", "").replace("</code>", "")
    row = re.search(rf"<tr>\s*<td><a [^>]*>{paid['id']}.*?</tr>", plain, re.S)
    assert row and "Till 1" in text(row.group(0))
    filtered = table(body(shop.owner.get(f"/merchant/payments?terminal={tid}")), "payment-list")
    assert paid["id"] in filtered and other["id"] not in filtered
    detail = body(shop.owner.get(f"/merchant/payments/{paid['id']}"))
    assert "Till 1" in text(re.search(r'<dd id="terminal">(.*?)</dd>', detail, re.S).group(1))

    # Refunds through the device key, of its own payments only.
    refund = device("POST", "/v1/refunds", {"payment_intent": paid["id"], "amount": "500"})
    assert refund.status_code == 200 and refund.get_json()["status"] == "succeeded"
    refused = device("POST", "/v1/refunds", {"payment_intent": other["id"]})
    assert refused.status_code == 404 and refused.get_json()["error"]["code"] == "resource_missing"
    assert device("GET", f"/v1/payment_intents/{other['id']}").status_code == 404
    with owner_engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT amount_refunded FROM payment_intents WHERE id = :i"), {"i": other["id"]}
            ).scalar_one()
            == 0
        )


def test_a_face_pay_device_is_the_payments_terminal_element(shop, site, owner_engine):
    _, secret = register(shop.owner, kind="face_pay", serial_number="FACE-7")
    face = {"amount": "5000", "currency": "usd", "payment_method": "face_pay", "confirm": "true"}
    # Without a terminal, face pay asks for one...
    backend = api(site, shop, shop.secret)
    error = backend("POST", "/v1/payment_intents", {**face, "payer[face_code]": "fc_1"}).get_json()["error"]
    assert (error["code"], error["param"]) == ("parameter_missing", "payer[terminal_id]")
    # ...a face-pay device is that terminal, whatever it sends.
    device = api(site, shop, secret)
    paid = device("POST", "/v1/payment_intents", {**face, "payer[face_code]": "fc_1", "payer[terminal_id]": "X"})
    assert paid.status_code == 200, paid.get_data(as_text=True)
    assert paid.get_json()["status"] == "succeeded"
    with owner_engine.connect() as conn:
        attempt = conn.execute(
            sa.select(PaymentAttempt.request).where(PaymentAttempt.payment_intent_id == paid.get_json()["id"])
        ).scalar_one()
    assert attempt["elements"] == ["face_code", "terminal_id"]
    detail = text(body(shop.owner.get(f"/merchant/payments/{paid.get_json()['id']}")))
    assert "Terminal FACE-7" in detail


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/balance"),
        ("GET", "/v1/payment_intents"),
        ("GET", "/v1/events"),
        ("POST", "/v1/payouts"),
        ("POST", "/v1/webhook_endpoints"),
    ],
)
def test_a_device_key_is_refused_everywhere_else(shop, site, method, path):
    _, secret = register(shop.owner)
    response = api(site, shop, secret)(method, path, {"amount": "100", "currency": "usd", "url": "http://x.test"})
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "device key" in error["message"] and secret not in error["message"]
    # Control: the merchant's own secret key is not refused there.
    assert api(site, shop, shop.secret)(method, path, {"url": "http://x.test"}).status_code != 403


def test_capture_and_cancel_are_refused_to_a_device(shop, site):
    _, secret = register(shop.owner)
    device = api(site, shop, secret)
    held = device("POST", "/v1/payment_intents", {**VISA, "confirm": "false"}).get_json()
    assert device("POST", f"/v1/payment_intents/{held['id']}/cancel").status_code == 403
    assert device("POST", f"/v1/payment_intents/{held['id']}/confirm").get_json()["status"] == "succeeded"


def test_a_rotated_or_deactivated_terminal_key_is_refused(shop, site, owner_engine):
    _, old = register(shop.owner)
    tid = terminal_id(owner_engine)
    rotated = shop.owner.submit(f"/merchant/terminals/{tid}/rotate-key", form_page="/merchant/terminals")
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    new = KEY_RE.search(body(rotated)).group(1)
    assert new != old
    assert api(site, shop, old)("POST", "/v1/payment_intents", VISA).status_code == 401
    assert api(site, shop, new)("POST", "/v1/payment_intents", VISA).status_code == 200

    response = shop.owner.submit(f"/merchant/terminals/{tid}/deactivate", form_page="/merchant/terminals")
    assert response.status_code == 302
    page = body(shop.owner.get("/merchant/terminals"))
    assert "Till 1 is deactivated" in text(page)
    refused = api(site, shop, new)("POST", "/v1/payment_intents", VISA)
    assert refused.status_code == 401 and refused.get_json()["error"]["type"] == "invalid_request_error"
    with owner_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(PaymentIntent)).scalar_one() == 1
        actions = conn.execute(sa.text("SELECT action FROM audit_events WHERE object_type = 'terminal'")).scalars()
        assert sorted(actions) == ["terminal.deactivated", "terminal.key_rotated", "terminal.registered"]


def test_another_merchants_terminal_is_invisible(shop, make, site, owner_engine):
    register(shop.owner)
    tid = terminal_id(owner_engine)
    make.merchant(shop.tenant, "Bikes", "owner@bikes.example.com")
    bikes = signed_in(site, shop.tenant, "owner@bikes.example.com")
    rows = text(table(body(bikes.get("/merchant/terminals")), "terminal-list"))
    assert "Till 1" not in rows and "SN-0001" not in rows and "No terminals yet." in rows
    for action in ("rotate-key", "deactivate"):
        response = bikes.submit(f"/merchant/terminals/{tid}/{action}", form_page="/merchant/terminals")
        assert response.status_code == 404
    filtered = bikes.get(f"/merchant/payments?terminal={tid}")
    assert "is not one of your terminals" in body(filtered)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM terminals")).scalar_one() == "active"
