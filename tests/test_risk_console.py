"""The console's risk pages: rules managed by admins (audited, bad input kept), alerts listed,
searched, filtered and paged, e-mailed to the admins in the tenant's brand; the review queue's
release and refund; the platform's overview; another tenant's alerts are a 404."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from conftest import text_of
from pages import body, signed_in, table, text

from core.db import db
from payments import intents
from payments.errors import CardError
from tenants.isolation import tenant_context


@pytest.fixture
def acme(app, make):
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, "operator@acme.example.com", "operator")
    make.user(tenant, "finance@acme.example.com", "finance")
    coffee = make.merchant(tenant, "Coffee Corner", "owner@coffee.example.com")
    make.channel_account(tenant.id)
    return tenant, coffee


def _pay(app, tenant_id, merchant_id, amount, email="jenny@example.com"):
    with app.app_context(), tenant_context(db.session, tenant_id):
        ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
        try:
            pi = intents.create(
                ctx,
                amount=amount,
                currency="usd",
                payment_method="pm_card_visa",
                confirm=True,
                payer_details={"receipt_email": email},
            )
            return pi.id
        except CardError as exc:
            return exc.payment_intent["id"]
        finally:
            db.session.remove()


RULE = {
    "name": "Big tickets",
    "kind": "large_amount",
    "action": "hold",
    "currency": "USD",
    "enabled": "y",
    "subject": "",
    "window_minutes": "",
    "count_limit": "",
    "amount_limit": "1000.00",
    "percent": "",
}


def _count(owner_engine, sql, **params):
    with owner_engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def test_an_admin_adds_a_rule_and_a_bad_one_keeps_the_input(site, acme, owner_engine):
    tenant, _ = acme
    admin = signed_in(site, tenant, tenant.admin_email)
    bad = {**RULE, "name": "Too big", "amount_limit": "10.001"}
    response = admin.submit("/console/risk/rules", bad)
    assert response.status_code == 422
    html = body(response)
    assert 'value="Too big"' in html and 'value="10.001"' in html
    assert _count(owner_engine, "SELECT count(*) FROM risk_rules") == 0

    response = admin.submit("/console/risk/rules", RULE)
    assert response.status_code == 302
    rules_table = text(table(body(admin.get("/console/risk/rules")), "risk-rules"))
    assert "Big tickets" in rules_table and "1,000.00" in rules_table and "Hold for review" in rules_table
    assert _count(owner_engine, "SELECT amount_limit FROM risk_rules") == 100_000
    assert _count(owner_engine, "SELECT count(*) FROM audit_events WHERE action = 'risk.rule_created'") == 1
    # The risk levels and what they do to a threshold are on the page.
    levels = text(table(body(admin.get("/console/risk/rules")), "risk-levels"))
    assert "Low × 2 2,000.00" in levels.replace("$", "").replace(" USD", "")

    rule_id = _count(owner_engine, "SELECT id FROM risk_rules")
    page = f"/console/risk/rules/{rule_id}"
    response = admin.submit(page, {**RULE, "action": "block", "amount_limit": "500"})
    assert response.status_code == 302
    assert _count(owner_engine, "SELECT action FROM risk_rules") == "block"
    response = admin.submit(f"{page}/delete", form_page=page)
    assert response.status_code == 302
    assert _count(owner_engine, "SELECT count(*) FROM risk_rules") == 0
    actions = _count(
        owner_engine,
        "SELECT string_agg(action, ',' ORDER BY created_at) FROM audit_events WHERE object_type = 'risk_rule'",
    )
    assert actions == "risk.rule_created,risk.rule_updated,risk.rule_deleted"


def test_an_operator_reads_rules_but_cannot_change_them(site, acme, owner_engine):
    tenant, _ = acme
    operator = signed_in(site, tenant, "operator@acme.example.com")
    assert operator.get("/console/risk/rules").status_code == 200
    assert 'id="new-rule"' not in body(operator.get("/console/risk/rules"))
    response = operator.submit("/console/risk/rules", RULE, form_page="/console/risk/rules")
    assert response.status_code == 403
    assert _count(owner_engine, "SELECT count(*) FROM risk_rules") == 0


def test_alerts_are_listed_searched_filtered_and_emailed(app, site, acme, outbox, make):
    tenant, coffee = acme
    tea = make.merchant(tenant, "Tea House", "owner@tea.example.com")
    admin = signed_in(site, tenant, tenant.admin_email)
    admin.submit("/console/risk/rules", {**RULE, "action": "flag", "name": "Large"})
    admin.submit(
        "/console/risk/rules",
        {**RULE, "name": "Twice", "kind": "duplicate", "action": "block", "subject": "payer", "window_minutes": "10"},
    )
    outbox()  # the invitation mail of the setup, if any
    big = _pay(app, tenant.id, coffee, 150_000)
    _pay(app, tenant.id, tea, 2_500, email="kim@example.com")
    blocked = _pay(app, tenant.id, tea, 2_500, email="kim@example.com")
    mails = [m for m in outbox() if "risk" in m["Subject"].lower()]
    assert {m["To"] for m in mails} == {tenant.admin_email}
    assert len(mails) == 2
    flagged_mail = next(m for m in mails if big in text_of(m))
    assert "Acme Payments" in flagged_mail["From"] and "1,500.00" in text_of(flagged_mail)
    blocked_mail = next(m for m in mails if blocked in text_of(m))
    assert "blocked" in blocked_mail["Subject"] and "nothing was charged" in text_of(blocked_mail)

    page = body(admin.get("/console/risk"))
    listed = text(table(page, "risk-alerts"))
    assert big in listed and blocked in listed and "Coffee Corner" in listed and "Tea House" in listed
    only_blocks = text(table(body(admin.get("/console/risk?action=block")), "risk-alerts"))
    assert blocked in only_blocks and big not in only_blocks
    by_merchant = text(table(body(admin.get("/console/risk?q=coffee")), "risk-alerts"))
    assert big in by_merchant and blocked not in by_merchant
    by_payment = text(table(body(admin.get(f"/console/risk?q={blocked}")), "risk-alerts"))
    assert blocked in by_payment and big not in by_payment
    response = admin.get("/console/risk?kind=nonsense")
    assert response.status_code == 422 and "is not a kind of rule" in body(response)
    # Finance reads them too; each alert has its page.
    finance = signed_in(site, tenant, "finance@acme.example.com")
    alert_id = _alert_of(app, tenant.id, blocked)
    detail = body(finance.get(f"/console/risk/alerts/{alert_id}"))
    assert "2 payments of" in text(detail) and "Block" in detail


def _alert_of(app, tenant_id, intent_id):
    with app.app_context(), tenant_context(db.session, tenant_id):
        value = db.session.execute(
            sa.text("SELECT id FROM risk_alerts WHERE payment_intent_id = :p"), {"p": intent_id}
        ).scalar_one()
        db.session.remove()
        return value


def test_alerts_page_in_pages(app, site, acme):
    tenant, coffee = acme
    app.config["PAGE_SIZE"], size = 2, app.config["PAGE_SIZE"]
    try:
        admin = signed_in(site, tenant, tenant.admin_email)
        admin.submit("/console/risk/rules", {**RULE, "action": "flag", "amount_limit": "1.00"})
        paid = [_pay(app, tenant.id, coffee, 100 + n) for n in range(3)]
        first = body(admin.get("/console/risk"))
        assert paid[2] in first and paid[1] in first and paid[0] not in first
        older = first.split('class="pager"')[1].split('href="')[1].split('"')[0].replace("&amp;", "&")
        assert paid[0] in body(admin.get(older))
    finally:
        app.config["PAGE_SIZE"] = size


def test_the_review_queue_releases_and_refunds(app, site, acme, owner_engine):
    tenant, coffee = acme
    admin = signed_in(site, tenant, tenant.admin_email)
    admin.submit("/console/risk/rules", RULE)
    first = _pay(app, tenant.id, coffee, 120_000)
    second = _pay(app, tenant.id, coffee, 130_000)
    operator = signed_in(site, tenant, "operator@acme.example.com")
    queue = text(table(body(operator.get("/console/risk/review")), "held-payments"))
    assert first in queue and second in queue and "Big tickets" in queue
    assert "2 payments are held" in text(body(operator.get("/console/risk")))

    response = operator.submit(f"/console/risk/review/{first}/release", form_page="/console/risk/review")
    assert response.status_code == 302
    response = operator.submit(f"/console/risk/review/{second}/refund", form_page="/console/risk/review")
    assert response.status_code == 302
    page = body(operator.get("/console/risk/review"))
    assert "refunded in full" in page and "No payment is held." in page
    assert _count(owner_engine, "SELECT risk_review FROM payment_intents WHERE id = :i", i=first) == "released"
    assert _count(owner_engine, "SELECT amount_refunded FROM payment_intents WHERE id = :i", i=second) == 130_000
    assert _count(owner_engine, "SELECT count(*) FROM refunds WHERE status = 'succeeded'") == 1
    audited = _count(
        owner_engine,
        "SELECT string_agg(action, ',' ORDER BY action) FROM audit_events WHERE object_id IN (:a, :b)",
        a=first,
        b=second,
    )
    # The review's decisions, and the refund itself (recorded by the refund use case).
    assert audited == "payment.refunded,payment.risk_refunded,payment.risk_released"
    # Releasing again says it is no longer held, and changes nothing.
    response = operator.submit(f"/console/risk/review/{first}/release", form_page="/console/risk/review")
    assert "is not held for review" in body(operator.get("/console/risk/review"))
    # Finance may look at alerts but not review.
    finance = signed_in(site, tenant, "finance@acme.example.com")
    assert finance.get("/console/risk/review").status_code == 403


def test_the_merchant_sees_that_a_payment_is_held_until_it_is_released(app, site, acme):
    tenant, coffee = acme
    signed_in(site, tenant, tenant.admin_email).submit("/console/risk/rules", RULE)
    held = _pay(app, tenant.id, coffee, 120_000)
    passed = _pay(app, tenant.id, coffee, 5_000)
    owner = signed_in(site, tenant, "owner@coffee.example.com")

    listed = body(owner.get("/merchant/payments?mode=test"))
    rows = {row for row in listed.split("<tr") if held in row or passed in row}
    assert [held in row for row in rows if "Held for review" in row] == [True]
    page = body(owner.get(f"/merchant/payments/{held}"))
    assert "Held for review" in page and "the money is not settled to you" in page
    assert "Held for review" not in body(owner.get(f"/merchant/payments/{passed}"))

    operator = signed_in(site, tenant, "operator@acme.example.com")
    operator.submit(f"/console/risk/review/{held}/release", form_page="/console/risk/review")
    assert "Held for review" not in body(owner.get(f"/merchant/payments/{held}"))


def test_another_tenants_alert_and_payment_are_404(app, site, acme, make, owner_engine):
    tenant, coffee = acme
    other = make.tenant("other")
    shop = make.merchant(other, "Shop", "owner@shop.example.com")
    make.channel_account(other.id)
    other_admin = signed_in(site, other, other.admin_email)
    other_admin.submit("/console/risk/rules", RULE)
    held = _pay(app, other.id, shop, 200_000)
    alert_id = _alert_of(app, other.id, held)
    admin = signed_in(site, tenant, tenant.admin_email)
    assert admin.get(f"/console/risk/alerts/{alert_id}").status_code == 404
    assert admin.get(f"/console/risk/alerts/{uuid.uuid4()}").status_code == 404
    assert held not in body(admin.get("/console/risk")) and held not in body(admin.get("/console/risk/review"))
    response = admin.submit(f"/console/risk/review/{held}/release", form_page="/console/risk/review")
    assert response.status_code == 404
    assert _count(owner_engine, "SELECT risk_review FROM payment_intents WHERE id = :i", i=held) == "held"
    # Its owner sees it.
    assert other_admin.get(f"/console/risk/alerts/{alert_id}").status_code == 200


def test_the_platform_sees_alerts_of_every_tenant(app, site, acme, make):
    tenant, coffee = acme
    admin = signed_in(site, tenant, tenant.admin_email)
    admin.submit("/console/risk/rules", RULE)
    held = _pay(app, tenant.id, coffee, 200_000)
    platform = site("localhost")
    platform.login(make.platform_admin())
    page = body(platform.get("/platform/risk"))
    overview = text(table(page, "risk-tenants"))
    assert "Acme Payments 1 1 0 1" in overview
    assert held in text(table(page, "risk-alerts"))


def test_a_blocked_payment_is_a_stripe_card_error_on_the_api(app, site, acme, owner_engine):
    from tenants import api_keys
    from tenants.audit import Actor

    tenant, coffee = acme
    admin = signed_in(site, tenant, tenant.admin_email)
    admin.submit("/console/risk/rules", {**RULE, "action": "block"})
    with app.app_context(), tenant_context(db.session, tenant.id):
        _, secret = api_keys.create_key(tenant.id, coffee, "test", "backend", Actor.system())
        db.session.remove()
    api = app.test_client()
    response = api.post(
        "/v1/payment_intents",
        data={"amount": "100000", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
        headers={"Authorization": f"Bearer {secret}", "Host": tenant.host},
    )
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == ("card_error", "card_declined", "fraudulent")
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert _count(owner_engine, "SELECT count(*) FROM payment_attempts") == 0
    # A smaller one goes through.
    response = api.post(
        "/v1/payment_intents",
        data={"amount": "99999", "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"},
        headers={"Authorization": f"Bearer {secret}", "Host": tenant.host},
    )
    assert response.status_code == 200 and response.get_json()["status"] == "succeeded"
