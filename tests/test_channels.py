"""Tenant admins manage channel accounts and routing rules; the route tester explains choices."""

import re

import pytest
import sqlalchemy as sa

from payments.models import ChannelAccount, RoutingRule
from tenants.models import AuditEvent

SANDBOX = {
    "name": "Sandbox cheap",
    "type": "sandbox",
    "mode": "test",
    "status": "active",
    "currency": "USD",
    "min_amount": "0.50",
    "max_amount": "200.00",
    "daily_cap": "",
    "priority": "10",
    "required_elements": "",
    "serve_card": "y",
    "percent_card": "1.5",
    "fixed_card": "0.10",
}
STRIPE = {
    **SANDBOX,
    "name": "Stripe main",
    "type": "stripe",
    "base_url": "http://127.0.0.1:8420",
    "secret_key": "sk_test_51SuperSecretValue9876",
    "webhook_secret": "whsec_TopSecretSigning1234",
    "max_amount": "",
    "percent_card": "2.9",
    "fixed_card": "0.30",
    "priority": "20",
}


@pytest.fixture
def admin(make, site):
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    client = site("acme.localhost")
    client.login(tenant.admin_email)
    return tenant, client, merchant


def _accounts(owner_engine):
    with owner_engine.connect() as conn:
        return {row.name: row for row in conn.execute(sa.select(ChannelAccount.__table__)).all()}


def test_add_a_channel_account_with_encrypted_masked_credentials(admin, owner_engine):
    tenant, client, _ = admin
    page = client.submit("/console/channels/new", STRIPE, follow_redirects=True)
    html = page.get_data(as_text=True)
    assert "Stripe main is added" in html
    assert "sk_test_51SuperSecretValue9876" not in html and "whsec_TopSecretSigning1234" not in html
    assert "sk_test_…9876" in html
    row = _accounts(owner_engine)["Stripe main"]
    assert row.products == ["card"] and row.costs == {"card": {"percent": "2.9", "fixed": 30}}
    assert row.min_amount == 50 and row.max_amount is None and row.priority == 20
    assert "SuperSecret" not in row.credentials_encrypted and "TopSecret" not in row.credentials_encrypted
    listing = client.get("/console/channels").get_data(as_text=True)
    assert "Stripe main" in listing and "2.9% + 0.30 USD" in listing and "SuperSecret" not in listing
    with owner_engine.connect() as conn:
        changes = conn.execute(
            sa.select(AuditEvent.changes).where(AuditEvent.action == "channel_account.created")
        ).scalar_one()
    assert "SuperSecret" not in str(changes) and changes["credentials"] == {"after": "set"}


def test_bad_input_is_explained_and_nothing_is_saved(admin, owner_engine):
    _, client, _ = admin
    missing_key = client.submit("/console/channels/new", {**STRIPE, "secret_key": ""})
    assert missing_key.status_code == 422
    assert "A stripe account needs: secret_key." in missing_key.get_data(as_text=True)
    assert 'value="Stripe main"' in missing_key.get_data(as_text=True)
    too_precise = client.submit("/console/channels/new", {**SANDBOX, "max_amount": "12.345"})
    assert "USD amounts have at most 2 decimals." in too_precise.get_data(as_text=True)
    inverted = client.submit("/console/channels/new", {**SANDBOX, "min_amount": "300", "max_amount": "200"})
    assert "The maximum is below the minimum." in inverted.get_data(as_text=True)
    no_product = client.submit("/console/channels/new", {k: v for k, v in SANDBOX.items() if k != "serve_card"})
    assert "Choose at least one product" in no_product.get_data(as_text=True)
    bad_currency = client.submit("/console/channels/new", {**SANDBOX, "currency": "XYZ"})
    assert "is not an ISO 4217 currency code" in bad_currency.get_data(as_text=True)
    assert _accounts(owner_engine) == {}


def test_edit_keeps_or_replaces_credentials_and_applies_at_once(admin, owner_engine):
    tenant, client, _ = admin
    client.submit("/console/channels/new", STRIPE)
    account_id = _accounts(owner_engine)["Stripe main"].id
    stored = _accounts(owner_engine)["Stripe main"].credentials_encrypted
    # An edit with empty secret fields keeps the stored secrets.
    client.submit(
        f"/console/channels/{account_id}", {**STRIPE, "secret_key": "", "webhook_secret": "", "status": "paused"}
    )
    row = _accounts(owner_engine)["Stripe main"]
    assert row.status == "paused" and row.credentials_encrypted == stored
    client.submit(f"/console/channels/{account_id}", {**STRIPE, "secret_key": "sk_test_NewKey0000"})
    assert "sk_test_…0000" in client.get(f"/console/channels/{account_id}").get_data(as_text=True)
    with owner_engine.connect() as conn:
        updates = (
            conn.execute(
                sa.select(AuditEvent.changes)
                .where(AuditEvent.action == "channel_account.updated")
                .order_by(AuditEvent.created_at)
            )
            .scalars()
            .all()
        )
    assert updates[0]["status"] == {"before": "active", "after": "paused"}
    assert updates[-1]["credentials"] == {"before": "set", "after": "changed"}
    assert "NewKey" not in str(updates)


def _test_route(client, merchant, amount, elements=""):
    page = client.submit(
        "/console/routing/test",
        {
            "test-merchant_id": str(merchant),
            "test-product": "card",
            "test-amount": amount,
            "test-currency": "USD",
            "test-mode": "test",
            "test-payer_elements": elements,
        },
        form_page="/console/routing",
    )
    html = page.get_data(as_text=True)
    verdicts = dict(re.findall(r'<tr class="verdict verdict-[a-z_]+"><td>([^<]+)</td><td>([a-z]+)</td>', html))
    return page, html, verdicts


def test_route_tester_explains_the_choice_and_rules_change_it(admin, owner_engine):
    tenant, client, merchant = admin
    client.submit("/console/channels/new", SANDBOX)
    client.submit("/console/channels/new", STRIPE)
    # 100.00: both admit it; the sandbox is cheaper (1.5% + 0.10 vs 2.9% + 0.30).
    page, html, verdicts = _test_route(client, merchant, "100.00", "payment_method")
    assert page.status_code == 200
    assert verdicts == {"Sandbox cheap": "chosen", "Stripe main": "kept"}
    # 500.00 is above the sandbox's maximum of 200.00: only Stripe can take it.
    _, html, verdicts = _test_route(client, merchant, "500.00", "payment_method")
    assert verdicts == {"Sandbox cheap": "dropped", "Stripe main": "chosen"}
    assert "maximum" in html
    # A rule excludes the sandbox for this merchant.
    sandbox_id = _accounts(owner_engine)["Sandbox cheap"].id
    added = client.submit(
        "/console/routing/rules",
        {"merchant_id": str(merchant), "channel_account_id": str(sandbox_id), "action": "exclude", "product": ""},
        form_page="/console/routing",
        follow_redirects=True,
    )
    assert "The rule is saved" in added.get_data(as_text=True)
    _, html, verdicts = _test_route(client, merchant, "100.00", "payment_method")
    assert verdicts == {"Sandbox cheap": "dropped", "Stripe main": "chosen"}
    with owner_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(RoutingRule)).scalar() == 1


def test_route_tester_with_no_channel_says_so(admin):
    _, client, merchant = admin
    page, html, verdicts = _test_route(client, merchant, "10.00")
    assert page.status_code == 200 and verdicts == {}
    assert 'id="route-summary"' in html


def test_operator_reads_channels_but_cannot_change_them(admin, make, site, owner_engine):
    tenant, client, merchant = admin
    client.submit("/console/channels/new", SANDBOX)
    make.user(tenant, "ops@acme.example.com", "operator")
    operator = site("acme.localhost")
    operator.login("ops@acme.example.com")
    assert "Sandbox cheap" in operator.get("/console/channels").get_data(as_text=True)
    account_id = _accounts(owner_engine)["Sandbox cheap"].id
    assert operator.get(f"/console/channels/{account_id}").status_code == 403
    assert operator.get("/console/channels/new").status_code == 403
    _, _, verdicts = _test_route(operator, merchant, "10.00", "payment_method")
    assert verdicts == {"Sandbox cheap": "chosen"}
