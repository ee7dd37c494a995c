"""Reports: volume, counts, success rate, refunds, fees and the tenant's revenue share per day, week and
month of the tenant's time zone, against figures computed by hand; and the pages that chart them.

The tenant is in Asia/Shanghai (UTC+8). Its payments are moved (in SQL) to moments chosen around
midnight, so that UTC days and the tenant's days differ:

    USD (channel cost 2.9% + 0.30, merchant fee 3% + 0.50, platform fee 0.5%)
    p1 Coffee 10.00  2026-03-01 15:30 UTC = 03-01 23:30 local  fee 0.80  cost 0.59  platform 0.05
    p2 Coffee 20.00  2026-03-01 16:30 UTC = 03-02 00:30 local  fee 1.10  cost 0.88  platform 0.10
    p3 Coffee  5.00  2026-03-02 02:00 UTC = 03-02 10:00 local  declined
    p4 Tea    30.00  2026-03-02 03:00 UTC = 03-02 11:00 local  fee 1.40  cost 1.17  platform 0.15
    p6 Coffee  7.00  2026-03-02 04:00 UTC, created and never confirmed (not an attempt)
    refund of 4.00 of p2  2026-03-03 01:00 UTC = 03-03 09:00 local
    EUR (no fee rule, no cost; the platform still takes 0.5%: 0.075 rounds half up to 0.08)
    p5 Coffee 15.00  2026-03-01 20:00 UTC = 03-02 04:00 local

2026-03-01 is a Sunday: p1 is in the ISO week of 02-23, p2 in the week of 03-02 (in UTC it would not be).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pages import body, signed_in, table, text

from billing import schedules
from billing.fees import FeeRule
from clearing import listings, reports
from core.db import db
from payments import intents, refunds
from payments.errors import CardError
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context

PRODUCTS = ["card", "alipay_qr", "wechat_pay", "face_pay", "bank_transfer"]
ZONE = "Asia/Shanghai"


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def _move(owner_engine, ident: str, when: datetime) -> None:
    """Pretend a payment (or a refund) and everything it wrote happened at `when`."""
    with owner_engine.begin() as conn:
        for sql in (
            "UPDATE payment_intents SET created_at = :t WHERE id = :i",
            "UPDATE refunds SET created_at = :t WHERE id = :i",
            "UPDATE balance_transactions SET created_at = :t WHERE source = :i",
            "UPDATE journal_entries SET created_at = :t WHERE reference = :i",
        ):
            conn.execute(sa.text(sql), {"t": when, "i": ident})


@pytest.fixture
def shop(app, make, owner_engine):
    tenant = make.tenant("acme")
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET time_zone = :z WHERE id = :t"), {"z": ZONE, "t": tenant.id})
    coffee = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    tea = make.merchant(tenant, "Tea", "owner@tea.example.com")
    usd = make.channel_account(tenant.id, "Sandbox USD", costs={"card": {"percent": "2.9", "fixed": 30}})
    eur = make.channel_account(tenant.id, "Sandbox EUR", currency="EUR")
    ids = {}
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            schedule = schedules.create_schedule(tenant.id, "Standard", Actor.system(), is_default=True)
            schedules.add_version(
                tenant.id, schedule.id, [FeeRule("card", "USD", Decimal("3"), 50)], PRODUCTS, Actor.system()
            )
            db.session.commit()
        with platform_scope(db.session):
            schedules.set_platform_fee(tenant.id, "0.5", Actor.system())
            db.session.commit()
        with tenant_context(db.session, tenant.id):
            c = intents.MerchantContext(tenant.id, coffee, False)
            t = intents.MerchantContext(tenant.id, tea, False)

            def pay(ctx, amount, currency="usd", method="pm_card_visa"):
                return intents.create(ctx, amount=amount, currency=currency, payment_method=method, confirm=True).id

            ids["p1"] = pay(c, 1000)
            ids["p2"] = pay(c, 2000)
            with pytest.raises(CardError) as declined:
                pay(c, 500, method="pm_card_chargeDeclined")
            ids["p3"] = declined.value.payment_intent["id"]
            ids["p4"] = pay(t, 3000)
            ids["p5"] = pay(c, 1500, "eur")
            ids["p6"] = intents.create(c, amount=700, currency="usd").id
            ids["r1"] = refunds.create(c, payment_intent=ids["p2"], amount=400).id
            db.session.remove()
    for key, moment in (
        ("p1", "2026-03-01T15:30"),
        ("p2", "2026-03-01T16:30"),
        ("p3", "2026-03-02T02:00"),
        ("p4", "2026-03-02T03:00"),
        ("p5", "2026-03-01T20:00"),
        ("p6", "2026-03-02T04:00"),
        ("r1", "2026-03-03T01:00"),
    ):
        _move(owner_engine, ids[key], at(moment))
    return {"tenant": tenant, "coffee": coffee, "tea": tea, "usd": usd, "eur": eur, "ids": ids}


def _run(app, tenant_id, period="day", first=date(2026, 3, 1), last=date(2026, 3, 3), **fields):
    with app.app_context(), tenant_context(db.session, tenant_id):
        report = reports.run(reports.ReportQuery(tenant_id, ZONE, first, last, period=period, **fields))
        db.session.remove()
    return report


def _figures(row: reports.ReportRow) -> tuple:
    return (
        row.attempted,
        row.succeeded,
        row.captures,
        row.volume,
        row.fees,
        row.refund_count,
        row.refunds,
        row.merchant_fees,
        row.channel_costs,
        row.platform_fee,
        row.tenant_revenue,
    )


#           attempted succeeded captures volume fees refunds refunded m.fees cost platform revenue
DAY_1_USD = (1, 1, 1, 1000, 80, 0, 0, 80, 59, 5, 16)
DAY_2_USD = (3, 2, 2, 5000, 250, 0, 0, 250, 205, 25, 20)
DAY_3_USD = (0, 0, 0, 0, 0, 1, 400, 0, 0, 0, 0)
DAY_2_EUR = (1, 1, 1, 1500, 0, 0, 0, 0, 0, 8, -8)


def test_tenant_days_in_its_time_zone(app, shop):
    report = _run(app, shop["tenant"].id)
    assert report.periods == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert report.currencies == ["EUR", "USD"]
    assert [_figures(row) for row in report.series("USD")] == [DAY_1_USD, DAY_2_USD, DAY_3_USD]
    assert [_figures(row) for row in report.series("EUR")] == [(0,) * 11, DAY_2_EUR, (0,) * 11]
    day_2 = report.series("USD")[1]
    assert day_2.success_rate == Decimal("66.7")  # 2 of 3, rounded half up to one decimal
    assert report.series("USD")[2].success_rate is None  # no attempt that day


def test_weeks_start_on_monday_in_the_tenant_zone_and_months_add_up(app, shop):
    weeks = _run(app, shop["tenant"].id, period="week")
    assert weeks.periods == [date(2026, 2, 23), date(2026, 3, 2)]
    usd = weeks.series("USD")
    assert _figures(usd[0]) == DAY_1_USD
    assert _figures(usd[1]) == tuple(a + b for a, b in zip(DAY_2_USD, DAY_3_USD, strict=True))
    months = _run(app, shop["tenant"].id, period="month")
    assert months.periods == [date(2026, 3, 1)]
    total = tuple(sum(values) for values in zip(DAY_1_USD, DAY_2_USD, DAY_3_USD, strict=True))
    assert _figures(months.series("USD")[0]) == total
    assert months.series("USD")[0].success_rate == Decimal("75.0")


def test_one_merchant_and_breakdowns(app, shop):
    coffee = _run(app, shop["tenant"].id, merchant_id=shop["coffee"])
    assert [(r.attempted, r.succeeded, r.volume, r.fees, r.refunds) for r in coffee.series("USD")] == [
        (1, 1, 1000, 80, 0),
        (2, 1, 2000, 110, 0),
        (0, 0, 0, 0, 400),
    ]
    by_merchant = _run(app, shop["tenant"].id, by="merchant")
    usd = {by_merchant.labels[row.key]: (row.volume, row.tenant_revenue) for row in by_merchant.breakdown("USD")}
    assert usd == {"Coffee": (3000, 16 + 12), "Tea": (3000, 8)}
    by_channel = _run(app, shop["tenant"].id, by="channel")
    assert {by_channel.labels[row.key]: row.volume for row in by_channel.breakdown("EUR")} == {"Sandbox EUR": 1500}
    assert {by_channel.labels[row.key]: row.volume for row in by_channel.breakdown("USD")} == {"Sandbox USD": 6000}
    by_product = _run(app, shop["tenant"].id, by="product")
    assert [(row.key, row.attempted, row.volume) for row in by_product.breakdown("USD")] == [("card", 4, 6000)]


def test_filters_parse_defaults_and_refusals(app, shop):
    zone = ZoneInfo(ZONE)
    merchant_scope = listings.Scope(shop["tenant"].id, shop["coffee"], zone)
    with app.app_context():
        parsed = reports.parse(merchant_scope, {}, today=date(2026, 3, 31))
        assert (parsed.query.first, parsed.query.last, parsed.query.period) == (
            date(2026, 3, 2),
            date(2026, 3, 31),
            "day",
        )
        parsed = reports.parse(merchant_scope, {"period": "month"}, today=date(2026, 3, 31))
        assert (parsed.query.first, parsed.query.period) == (date(2025, 4, 1), "month")
        parsed = reports.parse(merchant_scope, {"period": "year", "by": "merchant", "from": "x"})
        assert set(parsed.errors) == {"period", "by", "from"}
        assert parsed.query.merchant_id == shop["coffee"]  # a merchant sees only its own, whatever it asks
        parsed = reports.parse(merchant_scope, {"merchant": str(shop["tea"])})
        assert parsed.query.merchant_id == shop["coffee"]


def _cells(html: str, table_id: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", table(html, table_id), re.S)
    return [[text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)] for row in rows]


def test_console_report_page_charts_and_tables(shop, site):
    client = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    response = client.get("/console/reports?period=day&from=2026-03-01&to=2026-03-03&by=merchant")
    assert response.status_code == 200
    html = body(response)
    rows = _cells(html, "report-rows-USD")
    assert rows[1] == [
        "2026-03-01",
        "1",
        "1",
        "100.0 %",
        "10.00 USD",
        "0.00 USD",
        "0.80 USD",
        "0.59 USD",
        "0.05 USD",
        "0.16 USD",
    ]
    assert rows[2][:7] == ["2026-03-02", "3", "2", "66.7 %", "50.00 USD", "0.00 USD", "2.50 USD"]
    assert rows[3][5] == "4.00 USD"
    assert [row[0] for row in _cells(html, "breakdown-USD")[1:]] == ["Coffee", "Tea"]
    # Inline SVG charts named by their captions, no script and nothing fetched from elsewhere.
    charts = re.findall(r'<figure class="chart" id="(chart-[0-9a-f]+)">(.*?)</figure>', html, re.S)
    assert len(charts) >= 2 * 5  # per currency: money, counts, success rate, revenue share, breakdown
    for ident, figure in charts:
        assert f'aria-labelledby="{ident}-title"' in figure and 'role="img"' in figure
        assert "<script" not in figure
    assert "Revenue share per day in USD" in html
    assert not re.search(r'<script[^>]+src=|<link[^>]+href="https?://', html)


def test_merchant_report_page_shows_only_its_payments(shop, site):
    client = signed_in(site, shop["tenant"], "owner@coffee.example.com")
    html = body(client.get("/merchant/reports?period=week&from=2026-03-01&to=2026-03-03"))
    rows = _cells(html, "report-rows-USD")
    assert [row[:5] for row in rows[1:]] == [
        ["2026-02-23", "1", "1", "100.0 %", "10.00 USD"],
        ["2026-03-02", "2", "1", "50.0 %", "20.00 USD"],
    ]
    assert "Revenue share" not in html and "Tenant revenue" not in html
    # The period switch keeps the range.
    assert 'href="/merchant/reports?period=month&amp;from=2026-03-01&amp;to=2026-03-03"' in html
    # A filter that cannot be used is named next to its field; the report uses its default.
    response = client.get("/merchant/reports?period=year&from=2026-13-01")
    assert response.status_code == 200
    assert "&#39;year&#39; is not a period" in body(response) and "is not a date" in body(response)


def test_report_rows_export_equals_the_page(shop, site):
    client = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    filters = {"period": "day", "from": "2026-03-01", "to": "2026-03-03"}
    response = client.submit(
        "/console/exports", {"page": "reports", "format": "csv", **filters}, form_page="/console/reports"
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith('attachment; filename="report-')
    lines = list(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert lines[0][:4] == ["Day", "Currency", "Attempted", "Succeeded"]
    usd = [line for line in lines[1:] if line[1] == "USD"]
    assert [(line[0], line[2], line[3], line[4], line[6], line[9]) for line in usd] == [
        ("2026-03-01", "1", "1", "100.0", "10.00", "0.80"),
        ("2026-03-02", "3", "2", "66.7", "50.00", "2.50"),
        ("2026-03-03", "0", "0", "", "0.00", "0.00"),
    ]
    assert lines[0][-1] == "Tenant revenue" and usd[1][-1] == "0.20"
