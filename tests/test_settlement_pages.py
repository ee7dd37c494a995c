"""Settlement pages: merchants see balances, settlements, a settlement's transactions and its
statement (CSV, PDF); the tenant console keeps the settlement settings, starts runs and follows
them, charts the tenant's revenue per day, lists every merchant's settlements, and sets a
merchant's own T+N."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from html import unescape
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pages import body
from pages import signed_in as _signed_in
from pages import table as _table
from pages import text as _text

from billing import schedules
from billing.fees import FeeRule
from clearing import settlement
from clearing.models import ClearingRun, ClearingSettings, MerchantSettlementTerms, Settlement
from core.db import db
from payments import intents, refunds
from payments.models import BalanceTransaction
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context
from tenants.models import AuditEvent, Tenant

FORBIDDEN = "Your account is not allowed to open this page."
OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
OWNER = "owner@coffee.example.com"
STAFF = "staff@coffee.example.com"
TEA_OWNER = "owner@tea.example.com"
ADMIN = Actor(kind="user", email="admin@acme.example.com")
MONDAY = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the same day there


@pytest.fixture
def acme(app, make):
    """A tenant with two merchants on a 2 % card fee, staff of every role, and a sandbox channel."""
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    coffee = make.merchant(tenant, "Coffee", OWNER)
    tea = make.merchant(tenant, "Tea", TEA_OWNER)
    make.user(tenant, STAFF, "staff", merchant_id=coffee)
    make.channel_account(tenant.id)
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            schedule = schedules.create_schedule(tenant.id, "Standard", ADMIN)
            schedules.add_version(tenant.id, schedule.id, [FeeRule("card", "USD", Decimal("2"))], ["card"], ADMIN)
            db.session.commit()
        db.session.remove()
    return tenant, coffee, tea


# --- helpers (as in tests/test_settlement.py) ---------------------------------------------


def _pay(app, tenant_id, merchant_id, amount, at: datetime | None = None) -> str:
    """A captured test-mode payment; `at` back-dates its balance transaction (when it was captured)."""
    with app.app_context(), tenant_context(db.session, tenant_id):
        ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
        pi = intents.create(ctx, amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True)
        if at is not None:
            _backdate(pi.id, at)
        db.session.remove()
        return pi.id


def _backdate(source, at):
    db.session.execute(sa.update(BalanceTransaction).where(BalanceTransaction.source == source).values(created_at=at))
    db.session.commit()


def _refund(app, tenant_id, merchant_id, pi_id, amount, at) -> str:
    with app.app_context(), tenant_context(db.session, tenant_id):
        ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
        refund = refunds.create(ctx, payment_intent=pi_id, amount=amount)
        _backdate(refund.id, at)
        db.session.remove()
        return refund.id


def _settle(app, tenant_id, now: datetime) -> dict:
    with app.app_context(), tenant_context(db.session, tenant_id):
        run = ClearingRun(tenant_id=tenant_id, kind="settlement")
        db.session.add(run)
        db.session.commit()
        outcome = settlement.settle(tenant_id, run, now)
        run.status, run.started_at, run.finished_at = "succeeded", now, now  # as the job leaves it
        db.session.commit()
        db.session.remove()
        return outcome


def _set_zone(owner_engine, tenant_id, zone: str):
    with owner_engine.begin() as conn:
        conn.execute(sa.update(Tenant).where(Tenant.id == tenant_id).values(time_zone=zone))


def _rows(html: str, table_id: str = "settlement-list", row_class: str = "settlement") -> list[list[str]]:
    rows = re.findall(rf'<tr class="{row_class}">(.*?)</tr>', _table(html, table_id), re.S)
    return [[_text(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)] for row in rows]


def _settlements(owner_engine, merchant_id=None) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        statement = sa.select(Settlement.__table__).order_by(Settlement.business_day)
        if merchant_id is not None:
            statement = statement.where(Settlement.merchant_id == merchant_id)
        return conn.execute(statement).all()


def _older_link(html: str) -> str | None:
    match = re.search(r'<a href="([^"]+)">Older →</a>', html)
    return unescape(match.group(1)) if match else None


def _coffee_week(app, acme):
    """Coffee: Monday 100.00 + 50.00 and a 20.00 refund, Tuesday 70.00; Tea: Monday 30.00; all settled."""
    tenant, coffee, tea = acme
    first = _pay(app, tenant.id, coffee, 10_000, at=MONDAY)
    second = _pay(app, tenant.id, coffee, 5_000, at=MONDAY + timedelta(hours=5))
    refund = _refund(app, tenant.id, coffee, first, 2_000, at=MONDAY + timedelta(hours=6))
    tuesday = _pay(app, tenant.id, coffee, 7_000, at=MONDAY + timedelta(days=1))
    _pay(app, tenant.id, tea, 3_000, at=MONDAY)
    outcome = _settle(app, tenant.id, datetime(2026, 11, 10, tzinfo=UTC))
    assert outcome["settlements"] == 3
    return {"first": first, "second": second, "refund": refund, "tuesday": tuesday}


# --- the merchant's settlements ------------------------------------------------------------


def test_a_merchant_sees_its_balance_and_settlements(app, acme, site, owner_engine):
    tenant, coffee, _ = acme
    _set_zone(owner_engine, tenant.id, "Asia/Shanghai")
    _coffee_week(app, acme)
    _pay(app, tenant.id, coffee, 1_000)  # today's: pending

    page = _signed_in(site, tenant, OWNER).get("/merchant/settlements")
    assert page.status_code == 200
    html = body(page)
    # Newest first: Tuesday's settlement was made after Monday's.
    monday, tuesday = (s for s in _settlements(owner_engine, coffee))
    settled_at = {
        s.business_day: s.created_at.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
        for s in (monday, tuesday)
    }
    assert _rows(html) == [
        ["2026-11-03", "1 · 70.00 USD", "0 · 0.00 USD", "1.40 USD", "68.60 USD", settled_at[tuesday.business_day],
         "CSV · PDF"],
        ["2026-11-02", "2 · 150.00 USD", "1 · -20.00 USD", "3.00 USD", "127.00 USD", settled_at[monday.business_day],
         "CSV · PDF"],
    ]  # fmt: skip
    assert "Settled (Asia/Shanghai)" in html
    assert f'href="/merchant/settlements/{monday.id}"' in html
    assert f'href="/merchant/settlements/{monday.id}/statement.csv"' in html
    assert f'href="/merchant/settlements/{monday.id}/statement.pdf"' in html
    # 127.00 + 68.60 available; today's 10.00 less 0.20 pending.
    assert _rows(html, "balances", "balance") == [["USD", "9.80 USD", "195.60 USD"]]
    # Tea's settlement is not Coffee's.
    assert "30.00 USD" not in html
    assert 'href="/merchant/settlements"' in html  # the nav link

    live = body(_signed_in(site, tenant, STAFF).get("/merchant/settlements?mode=live"))
    assert _rows(live) == [] and "No settlements match." in live
    assert "No live mode balance yet." in live


def test_filters_narrow_the_list_and_bad_ones_are_explained(app, acme, site):
    tenant, _, _ = acme
    _coffee_week(app, acme)
    client = _signed_in(site, tenant, STAFF)

    def days(query: str) -> list[str]:
        response = client.get(f"/merchant/settlements?{query}")
        assert response.status_code == 200
        return [row[0] for row in _rows(body(response))]

    assert days("from=2026-11-03") == ["2026-11-03"]
    assert days("to=2026-11-02") == ["2026-11-02"]
    assert days("from=2026-11-02&to=2026-11-02") == ["2026-11-02"]
    assert days("currency=usd") == ["2026-11-03", "2026-11-02"]
    assert days("currency=EUR") == []

    html = body(client.get("/merchant/settlements?from=2026-13-01&to=2026-11-02"))
    error = re.search(r'<p id="from-error" class="error">([^<]*)</p>', html)
    assert error and "'2026-13-01' is not a date: use YYYY-MM-DD" in unescape(error.group(1))
    assert 'value="2026-13-01"' in html and 'aria-invalid="true"' in html
    assert "the list below ignores them" in html
    assert [row[0] for row in _rows(html)] == ["2026-11-02"]  # the good filter still applies

    html = body(client.get("/merchant/settlements?from=2026-11-03&to=2026-11-02&currency=XYZ"))
    assert re.search(r'<p id="to-error" class="error">“To” is before “From”.</p>', html)
    assert re.search(r'<p id="currency-error" class="error">[^<]*is not an ISO 4217 currency code', html)
    assert [row[0] for row in _rows(html)] == ["2026-11-03", "2026-11-02"]


def test_thirty_settlements_are_shown_25_at_a_time(app, acme, site):
    tenant, coffee, tea = acme
    first_day = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    for day in range(30):
        _pay(app, tenant.id, coffee, 1_000 + day, at=first_day + timedelta(days=day))
    _pay(app, tenant.id, tea, 3_000, at=first_day)
    assert _settle(app, tenant.id, datetime(2026, 12, 10, tzinfo=UTC))["settlements"] == 31
    expected = [(first_day + timedelta(days=day)).date().isoformat() for day in range(30)][::-1]

    client = _signed_in(site, tenant, OWNER)
    html = body(client.get("/merchant/settlements?currency=USD"))
    page_one = [row[0] for row in _rows(html)]
    assert page_one == expected[:25]
    older = _older_link(html)
    assert older and "currency=USD" in older and "mode=test" in older
    html = body(client.get(older))
    assert [row[0] for row in _rows(html)] == expected[25:]
    assert _older_link(html) is None and "← Newest" in html

    # The console lists every merchant's settlements, 25 at a time, by name and business day.
    admin = _signed_in(site, tenant, tenant.admin_email)
    html = body(admin.get("/console/clearing"))
    # Settled in the order of business days: Coffee's 30th last, Coffee's and Tea's 1st first.
    assert [row[:2] for row in _rows(html)] == [["Coffee", day] for day in expected[:25]]
    html = body(admin.get(_older_link(html)))
    rest = [row[:2] for row in _rows(html)]
    assert rest[:4] == [["Coffee", day] for day in expected[25:29]]
    assert sorted(rest[4:]) == [["Coffee", "2026-11-01"], ["Tea", "2026-11-01"]]
    assert _older_link(html) is None
    tea_only = body(admin.get("/console/clearing?merchant=te"))
    assert [row[:4] for row in _rows(tea_only)] == [["Tea", "2026-11-01", "test", "1 · 30.00 USD"]]
    ranged = body(admin.get("/console/clearing?merchant=coffee&from=2026-11-29&to=2026-11-30"))
    assert [row[:2] for row in _rows(ranged)] == [["Coffee", "2026-11-30"], ["Coffee", "2026-11-29"]]
    bad = body(admin.get("/console/clearing?from=yesterday"))
    assert "&#39;yesterday&#39; is not a date" in bad and len(_rows(bad)) == 25


def test_a_settlement_lists_its_transactions_and_downloads_its_statement(app, acme, site, owner_engine):
    tenant, coffee, _ = acme
    made = _coffee_week(app, acme)
    monday = _settlements(owner_engine, coffee)[0]
    client = _signed_in(site, tenant, STAFF)

    html = body(client.get(f"/merchant/settlements/{monday.id}"))
    assert "Settlement of 2026-11-02 (USD)" in html
    totals = _text(re.search(r'<dl class="facts" id="settlement-totals">(.*?)</dl>', html, re.S).group(1))
    assert "Charges 2 · 150.00 USD" in totals and "Refunds 1 · -20.00 USD" in totals
    assert "Fees 3.00 USD" in totals and "Net to your available balance 127.00 USD" in totals
    rows = _rows(html, "settlement-transactions", "transaction")
    assert [(row[1], row[2], row[4], row[5], row[6]) for row in rows] == [
        ("charge", made["first"], "100.00 USD", "2.00 USD", "98.00 USD"),
        ("charge", made["second"], "50.00 USD", "1.00 USD", "49.00 USD"),
        ("refund", made["refund"], "-20.00 USD", "0.00 USD", "-20.00 USD"),
    ]
    assert f'<a href="/merchant/payments/{made["first"]}">' in html
    assert f'<a href="/merchant/payments/{made["second"]}">' in html
    assert made["tuesday"] not in html

    response = client.get(f"/merchant/settlements/{monday.id}/statement.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="settlement-2026-11-02-USD.csv"'
    lines = list(csv.DictReader(io.StringIO(body(response))))
    assert [(r["type"], r["source"], r["amount"], r["fee"], r["net"]) for r in lines] == [
        ("charge", made["first"], "100.00", "2.00", "98.00"),
        ("charge", made["second"], "50.00", "1.00", "49.00"),
        ("refund", made["refund"], "-20.00", "0.00", "-20.00"),
        ("total", "", "130.00", "3.00", "127.00"),
    ]

    response = client.get(f"/merchant/settlements/{monday.id}/statement.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == 'attachment; filename="settlement-2026-11-02-USD.pdf"'
    assert response.data.startswith(b"%PDF-") and len(response.data) > 1000


def test_another_merchants_or_tenants_settlement_is_not_found(app, acme, make, site, owner_engine):
    tenant, coffee, tea = acme
    _coffee_week(app, acme)
    other = make.tenant("other")
    elsewhere = make.merchant(other, "Elsewhere", "owner@elsewhere.example.com")
    make.channel_account(other.id)
    _pay(app, other.id, elsewhere, 4_000, at=MONDAY)
    _settle(app, other.id, datetime(2026, 11, 10, tzinfo=UTC))
    teas = _settlements(owner_engine, tea)[0].id
    theirs = _settlements(owner_engine, elsewhere)[0].id
    client = _signed_in(site, tenant, OWNER)
    for settlement_id in (teas, theirs, uuid.uuid4()):
        for suffix in ("", "/statement.csv", "/statement.pdf"):
            response = client.get(f"/merchant/settlements/{settlement_id}{suffix}")
            assert response.status_code == 404, suffix
            assert "Page not found" in body(response)
    # Control: Tea's owner opens Tea's.
    assert _signed_in(site, tenant, TEA_OWNER).get(f"/merchant/settlements/{teas}").status_code == 200
    # The console lists only its own tenant's settlements.
    listing = body(_signed_in(site, tenant, tenant.admin_email).get("/console/clearing"))
    assert sorted(row[0] for row in _rows(listing)) == ["Coffee", "Coffee", "Tea"]
    assert "Elsewhere" not in listing and "40.00 USD" not in listing


# --- the console: settings ------------------------------------------------------------------


def _terms(owner_engine):
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(ClearingSettings.cutoff, ClearingSettings.delay_days)).all()


def _audit(owner_engine, action: str) -> list[dict]:
    with owner_engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(AuditEvent.changes).where(AuditEvent.action == action).order_by(AuditEvent.created_at)
            ).scalars()
        )


def test_an_admin_changes_the_cut_off_and_the_default_t_plus_n(acme, site, owner_engine):
    tenant, _, _ = acme
    _set_zone(owner_engine, tenant.id, "Asia/Shanghai")
    admin = _signed_in(site, tenant, tenant.admin_email)
    html = body(admin.get("/console/clearing"))
    assert "business day" in html and "T+N" in html  # the explanation
    assert '<dd id="current-cutoff">00:00 (Asia/Shanghai)</dd>' in html and '<dd id="current-delay">T+1</dd>' in html
    assert 'name="cutoff" type="text" value="00:00"' in html and 'name="delay_days" type="text" value="1"' in html
    assert 'href="/console/clearing"' in html  # the nav link

    response = admin.submit("/console/clearing/terms", {"cutoff": "18:30", "delay_days": "2"}, follow_redirects=True)
    html = body(response)
    assert "Settlement settings saved: cut-off 18:30 (Asia/Shanghai), default T+2." in html
    assert '<dd id="current-cutoff">18:30 (Asia/Shanghai)</dd>' in html and '<dd id="current-delay">T+2</dd>' in html
    assert _terms(owner_engine) == [(time(18, 30), 2)]
    assert _audit(owner_engine, "clearing.terms_updated") == [
        {"cutoff": {"before": "00:00", "after": "18:30"}, "delay_days": {"before": 1, "after": 2}}
    ]


@pytest.mark.parametrize(
    ("cutoff", "delay", "field", "message"),
    [
        ("25:00", "2", "cutoff", "&#39;25:00&#39; is not a time of day: use HH:MM, like 18:00."),
        ("6pm", "2", "cutoff", "&#39;6pm&#39; is not a time of day"),
        ("", "2", "cutoff", "Give the cut-off as HH:MM"),
        ("18:00", "31", "delay_days", "T+N is a whole number of days from 0 to 30."),
        ("18:00", "two", "delay_days", "T+N is a whole number of days from 0 to 30."),
        ("18:00", "", "delay_days", "T+N is a whole number of days from 0 to 30."),
    ],
)
def test_bad_settings_are_explained_at_their_field_and_kept(acme, site, owner_engine, cutoff, delay, field, message):
    tenant, _, _ = acme
    admin = _signed_in(site, tenant, tenant.admin_email)
    response = admin.submit(
        "/console/clearing/terms", {"cutoff": cutoff, "delay_days": delay}, form_page="/console/clearing"
    )
    assert response.status_code == 422
    html = body(response)
    error = re.search(rf'<p id="{field}-error" class="error">([^<]*)</p>', html)
    assert error and message in error.group(1), html
    assert f'name="cutoff" type="text" value="{cutoff}"' in html
    assert f'name="delay_days" type="text" value="{delay}"' in html
    assert "Settlement settings saved" not in html
    assert _terms(owner_engine) == [] and _audit(owner_engine, "clearing.terms_updated") == []


# --- the console: runs ----------------------------------------------------------------------


def _runs(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(ClearingRun.__table__).order_by(ClearingRun.created_at)).all()


def _run_row(html: str) -> str:
    rows = re.findall(r'<tr class="run run-[a-z]+">(.*?)</tr>', _table(html, "run-list"), re.S)
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("who", ["admin", "finance"])
def test_run_settlement_now_and_follow_it_to_the_end(app, acme, site, owner_engine, run_jobs, who):
    tenant, coffee, _ = acme
    _pay(app, tenant.id, coffee, 1_000, at=datetime.now(UTC) - timedelta(days=3))
    email = tenant.admin_email if who == "admin" else FINANCE
    client = _signed_in(site, tenant, email)
    assert "No settlement runs yet." in body(client.get("/console/clearing"))
    assert '<meta http-equiv="refresh"' not in body(client.get("/console/clearing"))

    html = body(
        client.submit("/console/clearing/settlements/run", form_page="/console/clearing", follow_redirects=True)
    )
    assert "Settlement run started" in html
    row = _text(_run_row(html))
    assert row.startswith("queued manual " + email)
    assert '<meta http-equiv="refresh" content="3">' in html

    # A second click while the run is queued starts nothing.
    html = body(
        client.submit("/console/clearing/settlements/run", form_page="/console/clearing", follow_redirects=True)
    )
    assert "A settlement run is already in progress" in html and "Settlement run started" not in html
    assert [(r.status, r.trigger, r.requested_by) for r in _runs(owner_engine)] == [("queued", "manual", email)]

    assert run_jobs() >= 1
    html = body(client.get("/console/clearing"))
    assert '<meta http-equiv="refresh"' not in html
    row = _run_row(html)
    assert '<span class="status status-succeeded">succeeded</span>' in row
    assert '<progress value="1" max="1">' in row and "1 / 1" in _text(row)
    assert "1 settlements, 1 transactions, 1 merchants" in _text(row) and "net 9.80 USD (test)" in _text(row)
    [run] = _runs(owner_engine)
    assert (run.status, run.total, run.processed) == ("succeeded", 1, 1) and run.finished_at is not None
    assert [row[:2] for row in _rows(html)] == [["Coffee", (datetime.now(UTC) - timedelta(days=3)).date().isoformat()]]


def test_an_operator_reads_but_cannot_change_or_run(acme, site, owner_engine):
    tenant, coffee, _ = acme
    operator = _signed_in(site, tenant, OPERATOR)
    page = operator.get("/console/clearing")
    assert page.status_code == 200
    html = body(page)
    assert '<dd id="current-delay">T+1</dd>' in html and 'href="/console/clearing"' in html
    assert 'id="terms-form"' not in html and 'id="run-settlement-form"' not in html
    merchant_page = body(operator.get(f"/console/merchants/{coffee}"))
    assert "Settles at the tenant default (T+1)." in merchant_page and 'id="settlement-terms-form"' not in merchant_page
    for path, data in [
        ("/console/clearing/terms", {"cutoff": "18:00", "delay_days": "3"}),
        ("/console/clearing/settlements/run", {}),
        (f"/console/merchants/{coffee}/settlement-terms", {"delay_days": "3"}),
    ]:
        response = operator.submit(path, data, form_page="/console/clearing")
        assert response.status_code == 403, path
        assert FORBIDDEN in body(response)
    assert _terms(owner_engine) == [] and _runs(owner_engine) == []
    with owner_engine.connect() as conn:
        assert conn.execute(sa.select(MerchantSettlementTerms.__table__)).all() == []


@pytest.mark.parametrize("email", [OWNER, STAFF])
def test_merchant_users_cannot_open_the_clearing_console(acme, site, owner_engine, email):
    tenant, coffee, _ = acme
    client = _signed_in(site, tenant, email)
    response = client.get("/console/clearing")
    assert response.status_code == 403 and FORBIDDEN in body(response)
    for path, data in [
        ("/console/clearing/terms", {"cutoff": "18:00", "delay_days": "3"}),
        ("/console/clearing/settlements/run", {}),
        (f"/console/merchants/{coffee}/settlement-terms", {"delay_days": "3"}),
    ]:
        assert client.submit(path, data, form_page="/merchant/").status_code == 403, path
    assert _terms(owner_engine) == [] and _runs(owner_engine) == []
    assert 'href="/console/clearing"' not in body(client.get("/merchant/"))


def test_tenant_staff_cannot_open_the_merchant_settlements(acme, site):
    tenant, _, _ = acme
    for email in (tenant.admin_email, FINANCE):
        response = _signed_in(site, tenant, email).get("/merchant/settlements")
        assert response.status_code == 403 and FORBIDDEN in body(response)


# --- the console: revenue -------------------------------------------------------------------


def _backdate_payment(owner_engine, pi_id: str, at: datetime):
    """Move a payment's capture (its balance transaction and journal entry) to `at`."""
    with owner_engine.begin() as conn:
        conn.execute(sa.update(BalanceTransaction).where(BalanceTransaction.source == pi_id).values(created_at=at))
        conn.execute(
            sa.text("UPDATE journal_entries SET created_at = :at WHERE reference = :pi AND kind = 'payment.captured'"),
            {"at": at, "pi": pi_id},
        )


def test_the_revenue_chart_and_table_after_fees_were_charged(app, make, site, owner_engine):
    tenant = make.tenant("beta")
    make.user(tenant, "finance@beta.example.com", "finance")
    shop = make.merchant(tenant, "Shop", "owner@shop.example.com")
    make.channel_account(tenant.id, costs={"card": {"percent": "2.9", "fixed": 30}})
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            schedule = schedules.create_schedule(tenant.id, "Standard", ADMIN)
            schedules.add_version(tenant.id, schedule.id, [FeeRule("card", "USD", Decimal("5"))], ["card"], ADMIN)
            db.session.commit()
        with platform_scope(db.session):
            schedules.set_platform_fee(tenant.id, "0.5", Actor.system())
            db.session.commit()
        db.session.remove()
    # Today 100.00: fee 5.00, channel 3.20, platform 0.50 -> +1.30. Yesterday 10.00: 0.50, 0.59, 0.05 -> -0.14.
    _pay(app, tenant.id, shop, 10_000)
    yesterday_pi = _pay(app, tenant.id, shop, 1_000)
    now = datetime.now(UTC)
    _backdate_payment(owner_engine, yesterday_pi, now - timedelta(days=1))
    today, yesterday = now.date(), (now - timedelta(days=1)).date()

    html = body(_signed_in(site, tenant, "finance@beta.example.com").get("/console/clearing"))
    assert "<script" not in html
    svg = re.search(r'<svg class="revenue-chart" role="img" aria-label="([^"]*)"[^>]*>(.*?)</svg>', html, re.S)
    assert svg, "no revenue chart"
    label, drawing = unescape(svg.group(1)), svg.group(2)
    assert label.startswith(f"Revenue per day in USD from {today - timedelta(days=29)} to {today}: 1.16 USD in total")
    bars = re.findall(
        r'<rect class="bar( negative)?" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', drawing
    )
    assert len(bars) == 30 and [b[0] for b in bars].count(" negative") == 1
    zero = float(re.search(r'<line [^>]*y1="([\d.]+)"', drawing).group(1))
    titles = [unescape(t) for t in re.findall(r"<title>([^<]*)</title>", drawing)]
    assert len(titles) == 30
    assert titles[-1] == (
        f"{today}: revenue 1.30 USD (merchant fees 5.00 USD, channel costs 3.20 USD, platform fee 0.50 USD)"
    )
    assert titles[-2] == (
        f"{yesterday}: revenue -0.14 USD (merchant fees 0.50 USD, channel costs 0.59 USD, platform fee 0.05 USD)"
    )
    # Today's bar stands on the axis, yesterday's hangs below it, the other days have none.
    (_, today_y, today_h), (negative, yesterday_y, yesterday_h) = bars[-1], bars[-2]
    assert float(today_y) + float(today_h) == pytest.approx(zero) and float(today_h) > 0
    assert negative and float(yesterday_y) == pytest.approx(zero) and 0 < float(yesterday_h) < float(today_h)
    assert all(float(height) == 0 for _, _, height in bars[:-2])

    table = re.search(r'<section class="revenue" id="revenue-USD">(.*?)</section>', html, re.S).group(1)
    rows = [
        [_text(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r'<tr class="revenue-day">(.*?)</tr>', table, re.S)
    ]
    assert len(rows) == 30
    assert rows[-1] == [today.isoformat(), "5.00 USD", "3.20 USD", "0.50 USD", "1.30 USD"]
    assert rows[-2] == [yesterday.isoformat(), "0.50 USD", "0.59 USD", "0.05 USD", "-0.14 USD"]
    assert rows[0] == [(today - timedelta(days=29)).isoformat(), "0.00 USD", "0.00 USD", "0.00 USD", "0.00 USD"]
    total = re.search(r'<tr class="revenue-total">(.*?)</tr>', table, re.S).group(1)
    assert _text(total) == "Total 5.50 USD 3.79 USD 0.55 USD 1.16 USD"

    live = body(_signed_in(site, tenant, tenant.admin_email).get("/console/clearing?mode=live"))
    assert "<svg" not in live and "No fees were charged in live mode" in live


def test_an_unknown_tenant_time_zone_does_not_break_the_page(app, acme, site, owner_engine):
    tenant, _, _ = acme
    _coffee_week(app, acme)
    _set_zone(owner_engine, tenant.id, "Mars/Olympus")  # never validated when a tenant is created
    page = _signed_in(site, tenant, tenant.admin_email).get("/console/clearing")
    assert page.status_code == 200
    html = body(page)
    assert "The tenant&#39;s time zone &#39;Mars/Olympus&#39; is not known" in html
    assert len(_rows(html)) == 3 and "Settled (UTC)" in html
    assert len(_rows(body(_signed_in(site, tenant, OWNER).get("/merchant/settlements")))) == 2


# --- the console: a merchant's T+N ----------------------------------------------------------


def _merchant_terms(owner_engine) -> list[tuple]:
    with owner_engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.select(MerchantSettlementTerms.merchant_id, MerchantSettlementTerms.delay_days))
        ]


@pytest.mark.parametrize("who", ["admin", "finance"])
def test_a_merchants_own_t_plus_n(acme, site, owner_engine, who):
    tenant, coffee, _ = acme
    client = _signed_in(site, tenant, tenant.admin_email if who == "admin" else FINANCE)
    page = f"/console/merchants/{coffee}"
    html = body(client.get(page))
    assert "Settles at the tenant default (T+1)." in html and 'id="settlement-terms-form"' in html

    html = body(client.submit(f"{page}/settlement-terms", {"delay_days": "3"}, form_page=page, follow_redirects=True))
    assert "Coffee settles at T+3 from the next run." in html
    assert "Settles at T+3, its own (the tenant default is T+1)." in html
    assert 'name="delay_days" type="text" value="3"' in html
    assert _merchant_terms(owner_engine) == [(coffee, 3)]

    html = body(client.submit(f"{page}/settlement-terms", {"delay_days": "45"}, form_page=page, follow_redirects=True))
    assert "The T+N of Coffee is unchanged: T+N is a whole number of days from 0 to 30." in html
    assert _merchant_terms(owner_engine) == [(coffee, 3)]

    html = body(client.submit(f"{page}/settlement-terms", {"delay_days": ""}, form_page=page, follow_redirects=True))
    assert "Coffee follows the tenant default (T+1) from the next run." in html
    assert "Settles at the tenant default (T+1)." in html
    assert _merchant_terms(owner_engine) == []
    assert _audit(owner_engine, "merchant.settlement_terms_set") == [
        {"delay_days": {"before": None, "after": 3}},
        {"delay_days": {"before": 3, "after": None}},
    ]
