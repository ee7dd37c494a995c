"""Channel notifications over HTTP: `POST /channels/notify/<channel account id>` on the tenant's host.

The bodies are the sandbox channel's own, signed with the account's webhook secret: the payer pays (or walks
away) at the channel, the channel notifies, and the payment the merchant sees changes once.
"""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

from core.db import db
from ledger.models import JournalEntry
from payments import intents
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.channel_adapters import adapter_of
from payments.channels.base import ChargeRequest
from payments.channels.sandbox import SIGNATURE_HEADER
from payments.models import ChannelAccount, ChannelNotification, Event, PaymentAttempt
from tenants.audit import Actor
from tenants.isolation import tenant_context

WEBHOOK_SECRET = "whsec_notify5Tq8Lm2Zp0Xr7Vb"


class Shop:
    """A tenant's merchant with one sandbox account taking cards and Alipay QR in CNY."""

    def __init__(self, app, make, slug: str, credentials=None):
        self.app = app
        self.tenant = make.tenant(slug)
        merchant = make.merchant(self.tenant, "Tea House", f"owner@{slug}-tea.example.com", password=None)
        self.ctx = intents.MerchantContext(self.tenant.id, merchant, livemode=False)
        with app.app_context(), tenant_context(db.session, self.tenant.id):
            account = create_channel_account(
                self.tenant.id,
                ChannelAccountInput(
                    name="Sandbox CN",
                    type="sandbox",
                    currency="CNY",
                    products=["card", "alipay_qr"],
                    credentials={"webhook_secret": WEBHOOK_SECRET} if credentials is None else credentials,
                ),
                {"card", "alipay_qr"},
                Actor.system(),
            )
            self.account_id = account.id
            db.session.remove()
        self.url = f"/channels/notify/{self.account_id}"

    def channel(self, call):
        """`call(adapter)` with this account's sandbox adapter (what the channel itself does)."""
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            account = db.session.get(ChannelAccount, (self.tenant.id, self.account_id))
            adapter = adapter_of(account)
            db.session.remove()
            return call(adapter)

    def pay(self, amount: int, payment_method: str):
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            pi = intents.create(self.ctx, amount=amount, currency="cny", payment_method=payment_method, confirm=True)
            db.session.remove()
            return pi

    def state(self, pi_id: str) -> dict:
        """What the merchant sees of the payment, and what was recorded for it."""
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            pi = intents.get(self.ctx, pi_id)
            entries = db.session.scalar(
                sa.select(sa.func.count()).select_from(JournalEntry).where(JournalEntry.reference == pi_id)
            )
            events = db.session.execute(
                sa.select(Event.type).where(Event.object_id == pi_id).order_by(Event.created_at)
            ).scalars()
            state = {
                "status": pi.status,
                "amount_received": pi.amount_received,
                "error": pi.last_payment_error,
                "ledger_entries": entries,
                "events": list(events),
            }
            db.session.remove()
            return state

    def received(self) -> list[tuple[str, str | None]]:
        """The notifications kept for this account: (outcome, payment intent)."""
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            rows = db.session.execute(
                sa.select(ChannelNotification.outcome, ChannelNotification.payment_intent_id).where(
                    ChannelNotification.channel_account_id == self.account_id
                )
            ).all()
            db.session.remove()
            return [tuple(row) for row in rows]

    def attempt_key(self, pi_id: str) -> str:
        with self.app.app_context(), tenant_context(db.session, self.tenant.id):
            key = db.session.execute(
                sa.select(PaymentAttempt.idempotency_key).where(PaymentAttempt.payment_intent_id == pi_id)
            ).scalar_one()
            db.session.remove()
            return key


@pytest.fixture
def shop(app, make) -> Shop:
    return Shop(app, make, "teahouse")


def notify(site, host: str, url: str, headers: dict, body: bytes):
    return site(host).post(url, data=body, headers=headers)


def test_the_payer_pays_the_channel_notifies_and_the_payment_succeeds_once(shop, site, caplog):
    pi = shop.pay(8_800, "alipay_qr")
    assert pi.status == "processing" and pi.channel_reference
    assert shop.state(pi.id)["ledger_entries"] == 0

    headers, body = shop.channel(lambda adapter: adapter.simulate_payer(pi.channel_reference))
    response = notify(site, shop.tenant.host, shop.url, headers, body)
    assert response.status_code == 200 and response.get_json() == {"received": True}
    paid = shop.state(pi.id)
    assert (paid["status"], paid["amount_received"], paid["ledger_entries"]) == ("succeeded", 8_800, 1)
    assert paid["events"] == ["payment_intent.created", "payment_intent.succeeded"]

    # Channels deliver more than once: the same notification again is recognised by its event id and changes nothing.
    caplog.set_level(logging.INFO, logger="payments.notifications")
    again = notify(site, shop.tenant.host, shop.url, headers, body)
    assert again.status_code == 200 and again.get_json() == {"received": True}
    assert shop.state(pi.id) == paid
    assert "received again: already handled" in caplog.text
    assert shop.received() == [("applied", pi.id)]


def test_a_payer_who_walks_away_fails_the_payment(shop, site):
    pi = shop.pay(5_000, "alipay_qr")
    headers, body = shop.channel(lambda adapter: adapter.simulate_payer(pi.channel_reference, pays=False))
    assert notify(site, shop.tenant.host, shop.url, headers, body).status_code == 200
    failed = shop.state(pi.id)
    assert failed["status"] == "requires_payment_method" and failed["ledger_entries"] == 0
    assert (failed["error"]["decline_code"], failed["error"]["message"]) == (
        "payer_abandoned",
        "The payer did not pay.",
    )
    assert failed["events"][-1] == "payment_intent.payment_failed"


def test_a_timeout_is_resolved_by_the_notification_that_names_our_key(shop, site, run_jobs):
    pi = shop.pay(4_001, "pm_card_visa")
    assert pi.status == "processing" and pi.channel_reference is None  # the channel's answer never came
    key = shop.attempt_key(pi.id)
    reference = shop.channel(lambda adapter: adapter.query(idempotency_key=key).reference)
    headers, body = shop.channel(lambda adapter: adapter.notification_for(reference))
    assert notify(site, shop.tenant.host, shop.url, headers, body).status_code == 200
    paid = shop.state(pi.id)
    assert (paid["status"], paid["amount_received"], paid["ledger_entries"]) == ("succeeded", 4_001, 1)
    # The query job queued by the timeout finds the payment final and changes nothing.
    run_jobs()
    assert shop.state(pi.id) == paid


def test_a_tampered_body_is_refused_and_changes_nothing(shop, site, caplog):
    pi = shop.pay(8_800, "alipay_qr")
    headers, body = shop.channel(lambda adapter: adapter.simulate_payer(pi.channel_reference))
    before = shop.state(pi.id)
    tampered = body.replace(b'"amount":8800', b'"amount":88')
    assert tampered != body
    with caplog.at_level(logging.INFO):
        response = notify(site, shop.tenant.host, shop.url, headers, tampered)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["type"] == "invalid_notification"
    assert "the signature does not match the body; nothing was changed" in error["message"]
    assert shop.state(pi.id) == before
    unsigned = notify(site, shop.tenant.host, shop.url, {"Content-Type": "application/json"}, body)
    assert unsigned.status_code == 400 and "signature header is missing" in unsigned.get_json()["error"]["message"]
    assert shop.state(pi.id) == before
    # Neither the secret nor the signature reaches the log.
    assert "rejected" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text and headers[SIGNATURE_HEADER] not in caplog.text
    # The genuine notification still goes through.
    assert notify(site, shop.tenant.host, shop.url, headers, body).status_code == 200
    assert shop.state(pi.id)["status"] == "succeeded"


def test_another_tenants_host_does_not_know_the_account(app, make, shop, site):
    other = Shop(app, make, "otherteas")
    pi = shop.pay(8_800, "alipay_qr")
    headers, body = shop.channel(lambda adapter: adapter.simulate_payer(pi.channel_reference))
    before = shop.state(pi.id)
    for host in (other.tenant.host, "localhost"):
        response = notify(site, host, shop.url, headers, body)
        assert response.status_code == 404, host
        assert response.get_json()["error"]["type"] == "not_found"
        assert shop.state(pi.id) == before
    # The account's own host takes it.
    assert notify(site, shop.tenant.host, shop.url, headers, body).status_code == 200
    assert shop.state(pi.id)["status"] == "succeeded"


def test_a_notification_about_a_payment_that_is_not_ours_is_acknowledged_and_ignored(shop, site, caplog):
    pi = shop.pay(8_800, "alipay_qr")
    before = shop.state(pi.id)

    def charge_made_elsewhere(adapter):
        request = ChargeRequest(amount=1_200, currency="CNY", idempotency_key="elsewhere-1", product="alipay_qr")
        return adapter.simulate_payer(adapter.charge(request).reference)

    headers, body = shop.channel(charge_made_elsewhere)
    with caplog.at_level(logging.INFO, logger="payments.notifications"):
        response = notify(site, shop.tenant.host, shop.url, headers, body)
    assert response.status_code == 200 and response.get_json() == {"received": True}
    assert "ignored: it names no payment made through this channel account" in caplog.text
    assert shop.state(pi.id) == before
    assert shop.received() == [("ignored", None)]


def test_an_account_without_a_webhook_secret_says_what_to_set(app, make, site):
    bare = Shop(app, make, "nosecret", credentials={})
    response = notify(site, bare.tenant.host, bare.url, {"Content-Type": "application/json"}, b"{}")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["type"] == "channel_not_configured"
    assert "has no webhook_secret: set it in Console → Channels → Sandbox CN" in error["message"]


def test_an_id_that_is_not_an_account_is_404(shop, site):
    unknown = notify(site, shop.tenant.host, "/channels/notify/00000000-0000-0000-0000-000000000000", {}, b"{}")
    assert unknown.status_code == 404 and unknown.get_json()["error"]["type"] == "not_found"
    assert notify(site, shop.tenant.host, "/channels/notify/not-a-uuid", {}, b"{}").status_code == 404


def test_the_merchant_sees_the_notification_in_the_payment_timeline(shop, site, make):
    pi = shop.pay(6_600, "alipay_qr")
    headers, body = shop.channel(lambda adapter: adapter.simulate_payer(pi.channel_reference))
    assert notify(site, shop.tenant.host, shop.url, headers, body).status_code == 200
    event_id = json.loads(body)["id"]
    make.user(shop.tenant, "staff@teahouse.example.com", "staff", merchant_id=shop.ctx.merchant_id)
    staff = site(shop.tenant.host)
    staff.login("staff@teahouse.example.com")
    html = staff.get(f"/merchant/payments/{pi.id}").get_data(as_text=True)
    assert "notification from Sandbox CN" in html and f"event {event_id}, applied" in html
