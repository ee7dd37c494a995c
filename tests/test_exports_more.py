"""Exports of the other lists: the audit log (the tenant console's and the platform's), the console's
merchants, a merchant's refunds, charge items, coupons and payment links. Each file (CSV and Excel)
holds exactly the rows its page shows with the same filters, never another tenant's or merchant's,
and only people who may open the page export it."""

from __future__ import annotations

import csv
import io
import re
import uuid
from decimal import Decimal
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import openpyxl
import pytest
import sqlalchemy as sa
from pages import body, signed_in
from workers import Workers, wait_for

from billing import catalog, coupons
from billing.catalog import ChargeItemInput
from billing.coupons import CouponInput
from clearing.models import ReportExport
from core.db import db
from payments import intents, links, refunds
from payments.links import LinkInput
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent, Merchant

COFFEE = "owner@coffee.example.com"
COFFEE_STAFF = "staff@coffee.example.com"
BIKES = "owner@bikes.example.com"
OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def shop(app, make):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", COFFEE)
    bikes = make.merchant(tenant, "Bikes", BIKES)
    make.user(tenant, COFFEE_STAFF, "staff", merchant_id=coffee)
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    make.channel_account(tenant.id)
    make.channel_account(tenant.id, "Sandbox EUR", currency="EUR")
    owner = Actor(kind="user", email=COFFEE)
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, coffee, False)
        for n in range(6):
            pi = intents.create(
                ctx,
                amount=1000 * (n + 1),
                currency="eur" if n % 3 == 2 else "usd",
                payment_method="pm_card_visa",
                confirm=True,
            )
            refunds.create(ctx, payment_intent=pi.id, amount=125 * (n + 1))
        other = intents.MerchantContext(tenant.id, bikes, False)
        pi = intents.create(other, amount=5000, currency="usd", payment_method="pm_card_visa", confirm=True)
        refunds.create(other, payment_intent=pi.id, amount=700)
        products = {"card"}
        for name, price, merchant in (
            ("Espresso", "2.50", coffee),
            ("Espresso doppio", "3.75", coffee),
            ("Cake", "4.00", coffee),
            ("Espresso bike", "900", bikes),
        ):
            item = catalog.create_item(
                tenant.id, merchant, ChargeItemInput(name=name, unit_price=price, currency="USD"), products, owner
            )
            if name == "Espresso doppio":
                catalog.set_active(item, False, owner)
        for code, kind, extra, merchant in (
            ("SUMMER10", "percent", {"percent_off": "12.5"}, coffee),
            ("FIVE", "fixed", {"amount_off": "5.00", "currency": "EUR", "min_amount": "20"}, coffee),
            ("SUMMERBIKE", "percent", {"percent_off": "5"}, bikes),
        ):
            coupons.create_coupon(tenant.id, merchant, CouponInput(code=code, kind=kind, **extra), owner)
        for name, amount, merchant, live in (
            ("Yoga class", "25.00", coffee, False),
            ("Yoga mat", "40.00", coffee, False),
            ("Yoga live", "10.00", coffee, True),
            ("Yoga bike", "99.00", bikes, False),
        ):
            links.create_link(
                tenant.id, merchant, LinkInput(name=name, amount=amount, currency="USD", livemode=live), owner
            )
        db.session.remove()
    other_tenant = make.tenant("globex")
    make.merchant(other_tenant, "Coffee Globex", "owner@globex-coffee.example.com")
    return {"tenant": tenant, "coffee": coffee, "bikes": bikes, "other": other_tenant}


def _export_form(html: str, page: str) -> dict[str, str]:
    form = re.search(
        rf'<form method="post" action="[^"]+" class="inline export-form" id="export-{page}">(.*?)</form>', html, re.S
    )
    assert form, f"no export form for {page} on the page"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1))
    return {name: unescape(value) for name, value in fields if name != "csrf_token"}


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def _xlsx(data: bytes) -> list[tuple]:
    return list(openpyxl.load_workbook(io.BytesIO(data)).worksheets[0].iter_rows(values_only=True))


def _both(client, url: str, page: str, audience: str = "merchant", action: str | None = None):
    """The page's HTML and the CSV and Excel rows its export form gives (header first)."""
    html = body(client.get(url))
    form = _export_form(html, page)
    files = []
    for fmt in ("csv", "xlsx"):
        response = client.submit(action or f"/{audience}/exports", {**form, "format": fmt}, form_page=url)
        assert response.status_code == 200, (fmt, response.status_code)
        data = response.get_data()
        if fmt == "csv":
            assert response.mimetype == "text/csv"
            files.append(_csv(data))
        else:
            assert response.mimetype == XLSX
            files.append(_xlsx(data))
    return html, form, files[0], files[1]


def _cells(html: str, pattern: str) -> list[str]:
    return [unescape(value) for value in re.findall(pattern, html)]


# --- refunds ---------------------------------------------------------------------------------------

REFUND_ID = r"<tr class=\"refund\">\s*<td><code>(re_[A-Za-z0-9]+)</code>"


def test_the_refunds_page_lists_filters_pages_and_exports_the_merchants_refunds(shop, site):
    client = signed_in(site, shop["tenant"], COFFEE)
    all_refunds = body(client.get("/merchant/refunds"))
    assert len(_cells(all_refunds, REFUND_ID)) == 6  # Coffee's six, not Bikes'
    assert 'href="/merchant/refunds">Refunds</a>' in all_refunds  # in the navigation
    url = "/merchant/refunds?status=succeeded&currency=usd"
    html, form, rows, sheet = _both(client, url, "refunds")
    shown = _cells(html, REFUND_ID)
    assert len(shown) == 4  # the USD ones
    assert form == {"page": "refunds", "status": "succeeded", "currency": "usd"}
    # Each refund links to its payment.
    payment_links = re.findall(r'<a href="/merchant/payments/(pi_[A-Za-z0-9]+)"><code>', html)
    assert len(payment_links) == 4
    assert rows[0] == ["Refund", "Created (UTC)", "Payment", "Status", "Currency", "Amount", "Reason", "Failure"]
    assert [row[0] for row in rows[1:]] == shown
    assert [row[2] for row in rows[1:]] == payment_links
    assert sorted(row[5] for row in rows[1:]) == ["1.25", "2.50", "5.00", "6.25"]
    assert {row[4] for row in rows[1:]} == {"USD"}
    assert [row[0] for row in sheet[1:]] == shown
    assert sorted(Decimal(str(row[5])) for row in sheet[1:]) == [Decimal(v) for v in ("1.25", "2.50", "5.00", "6.25")]
    # Live mode has none; an unknown status is named and ignored.
    assert "No refunds match." in body(client.get("/merchant/refunds?mode=live"))
    bad = body(client.get("/merchant/refunds?status=lost&from=2026-13-01"))
    assert "&#39;lost&#39; is not a refund status." in bad and "is not a date" in bad
    assert len(_cells(bad, REFUND_ID)) == 6


def test_refunds_are_keyset_paged_with_their_filters(shop, site, monkeypatch):
    from portal.merchant import payments as pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 3)
    client = signed_in(site, shop["tenant"], COFFEE)
    first = body(client.get("/merchant/refunds?currency=usd"))
    cursor = re.search(r'href="/merchant/refunds\?after=([^&"]+)&amp;mode=test&amp;currency=usd"', first)
    assert cursor, "no link to the older page keeping the filters"
    second = body(client.get(f"/merchant/refunds?after={cursor.group(1)}&currency=usd"))
    shown = _cells(first, REFUND_ID) + _cells(second, REFUND_ID)
    assert len(_cells(first, REFUND_ID)) == 3 and len(shown) == len(set(shown)) == 4


def test_merchant_staff_export_refunds_and_other_merchants_never_see_them(shop, site):
    staff = signed_in(site, shop["tenant"], COFFEE_STAFF)
    _, _, rows, _ = _both(staff, "/merchant/refunds", "refunds")
    assert len(rows) == 1 + 6
    bikes = signed_in(site, shop["tenant"], BIKES)
    _, _, rows, _ = _both(bikes, "/merchant/refunds", "refunds")
    assert [row[5] for row in rows[1:]] == ["7.00"]
    assert not set(row[0] for row in rows[1:]) & set(_cells(body(staff.get("/merchant/refunds")), REFUND_ID))


# --- charge items, coupons, payment links --------------------------------------------------------


def test_charge_items_export_with_the_search_and_state_of_the_page(shop, site):
    client = signed_in(site, shop["tenant"], COFFEE_STAFF)
    url = "/merchant/charge-items?q=espresso&state=active"
    html, form, rows, sheet = _both(client, url, "charge_items")
    assert form == {"page": "charge_items", "q": "espresso", "state": "active"}
    shown = _cells(html, r'<a href="/merchant/charge-items/[0-9a-f-]+">([^<]+)</a>')
    assert shown == ["Espresso"]  # not the inactive doppio, not Bikes' espresso bike
    assert rows[0][:5] == ["Charge item", "Name", "Unit", "Currency", "Unit price"]
    assert [(row[1], row[3], row[4], row[7]) for row in rows[1:]] == [("Espresso", "USD", "2.50", "active")]
    assert [(row[1], row[4]) for row in sheet[1:]] == [("Espresso", 2.5)]
    _, _, rows, _ = _both(client, "/merchant/charge-items?state=inactive", "charge_items")
    assert [row[1] for row in rows[1:]] == ["Espresso doppio"]


def test_coupons_export_with_the_search_of_the_page(shop, site):
    client = signed_in(site, shop["tenant"], COFFEE)
    html, form, rows, sheet = _both(client, "/merchant/coupons", "coupons")
    shown = _cells(html, r'<a href="/merchant/coupons/[0-9a-f-]+"><code>([^<]+)</code>')
    assert sorted(shown) == ["FIVE", "SUMMER10"]
    assert [row[0] for row in rows[1:]] == shown
    by_code = {row[0]: row for row in rows[1:]}
    assert by_code["SUMMER10"][1:5] == ["percent", "12.5", "", ""]
    assert by_code["FIVE"][1:6] == ["fixed", "", "EUR", "5.00", "20.00"]
    assert {row[0] for row in sheet[1:]} == {"FIVE", "SUMMER10"}
    _, _, rows, _ = _both(client, "/merchant/coupons?q=summer", "coupons")
    assert [row[0] for row in rows[1:]] == ["SUMMER10"]  # not Bikes' SUMMERBIKE


def test_payment_links_export_with_the_mode_search_and_state_of_the_page(shop, site):
    client = signed_in(site, shop["tenant"], COFFEE)
    html, form, rows, sheet = _both(client, "/merchant/payment-links?q=yoga&state=active", "payment_links")
    shown = _cells(html, r'<a href="/merchant/payment-links/plink_[A-Za-z0-9]+">([^<]+)</a>')
    assert sorted(shown) == ["Yoga class", "Yoga mat"]
    assert [row[1] for row in rows[1:]] == shown
    assert {(row[1], row[2], row[4], row[5], row[6]) for row in rows[1:]} == {
        ("Yoga class", "test", "USD", "25.00", "0"),
        ("Yoga mat", "test", "USD", "40.00", "0"),
    }
    assert [row[1] for row in sheet[1:]] == shown
    _, form, rows, _ = _both(client, "/merchant/payment-links?mode=live", "payment_links")
    assert form["mode"] == "live" and [row[1] for row in rows[1:]] == ["Yoga live"]


# --- the console's merchants -----------------------------------------------------------------------


def test_the_console_merchants_list_filters_by_name_and_onboarding_and_exports(shop, site, app):
    with app.app_context(), tenant_context(db.session, shop["tenant"].id):
        db.session.execute(
            sa.update(Merchant)
            .where(Merchant.id == shop["bikes"])
            .values(onboarding_status="submitted", risk_level="medium")
        )
        db.session.commit()
        db.session.remove()
    for email in (shop["tenant"].admin_email, OPERATOR, FINANCE):
        client = signed_in(site, shop["tenant"], email)
        html, form, rows, sheet = _both(client, "/console/merchants?onboarding=submitted", "merchants", "console")
        assert form == {"page": "merchants", "onboarding": "submitted"}
        shown = _cells(html, r'<a href="/console/merchants/[0-9a-f-]+">([^<]+)</a>')
        assert shown == ["Bikes"]
        assert rows[0] == ["Name", "Status", "Onboarding state", "Risk level", "Created (UTC)"]
        assert [row[:4] for row in rows[1:]] == [["Bikes", "active", "submitted", "medium"]]
        assert [row[:4] for row in sheet[1:]] == [("Bikes", "active", "submitted", "medium")]
    _, _, rows, _ = _both(client, "/console/merchants?q=coffee", "merchants", "console")
    assert [row[0] for row in rows[1:]] == ["Coffee"]  # not the other tenant's "Coffee Globex"
    bad = body(client.get("/console/merchants?onboarding=sleeping"))
    assert "&#39;sleeping&#39; is not an onboarding state." in bad


# --- the audit log ---------------------------------------------------------------------------------

EVENT = r'<td>([a-z_.]+)</td>\s*<td title="([^"]*)">'


def test_the_console_audit_log_exports_its_filtered_events_for_admins_only(shop, site, owner_engine):
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    url = "/console/audit?action=coupon."
    html, form, rows, sheet = _both(admin, url, "audit", "console")
    assert form == {"page": "audit", "action": "coupon."}
    shown = [(action, object_id) for action, object_id in re.findall(EVENT, html)]
    assert len(shown) == 3 and {action for action, _ in shown} == {"coupon.created"}
    assert rows[0][:6] == ["When (UTC)", "Who", "Action", "Object type", "Object id", "Changes"]
    assert [(row[2], row[4]) for row in rows[1:]] == shown
    assert [(row[2], row[4]) for row in sheet[1:]] == shown
    assert all(row[1] == COFFEE for row in rows[1:])
    # Another tenant's events never appear.
    with owner_engine.connect() as conn:
        others = set(
            conn.execute(sa.select(AuditEvent.object_id).where(AuditEvent.tenant_id == shop["other"].id)).scalars()
        )
    _, _, every, _ = _both(admin, "/console/audit", "audit", "console")
    assert others and not others & {row[4] for row in every[1:]}
    # Operators and finance may export other lists, not the audit log (nor open it).
    for email in (OPERATOR, FINANCE):
        client = signed_in(site, shop["tenant"], email)
        assert client.get("/console/audit").status_code == 403
        response = client.submit("/console/exports", {"page": "audit", "format": "csv"}, form_page="/console/merchants")
        assert response.status_code == 403


@pytest.fixture
def small_direct_limit(app):
    before = app.config["EXPORT_DIRECT_MAX_ROWS"]
    app.config["EXPORT_DIRECT_MAX_ROWS"] = 5
    yield
    app.config["EXPORT_DIRECT_MAX_ROWS"] = before


@pytest.fixture
def workers(app, owner_url, tmp_path):
    group = Workers(app, owner_url, tmp_path)
    group.env["PAYPLAT_INSTANCE_DIR"] = str(app.config["INSTANCE_DIR"])
    yield group
    group.stop_all()


def test_a_large_audit_export_runs_in_a_worker_and_only_admins_see_it(
    app, shop, site, small_direct_limit, workers, owner_engine
):
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    url = "/console/audit?actor=owner@coffee"
    html = body(admin.get(url))
    shown = re.findall(EVENT, html)
    assert len(shown) > 5
    form = _export_form(html, "audit")
    response = admin.submit("/console/exports", {**form, "format": "xlsx"}, form_page=url)
    assert response.status_code == 302
    path = urlsplit(response.headers["Location"]).path
    export_id = uuid.UUID(path.rsplit("/", 1)[1])
    assert '<progress id="export-progress"' in body(admin.get(path))

    worker = workers.start("exports", "--burst", queue="exports")

    def finished():
        with owner_engine.connect() as conn:
            return conn.execute(sa.select(ReportExport.status).where(ReportExport.id == export_id)).scalar_one() in (
                "succeeded",
                "failed",
            )

    wait_for(finished, 60, "the worker to finish the export")
    worker.wait(30)
    state = admin.get(f"{path}/status").get_json()
    assert state["status"] == "succeeded", workers.logs()
    assert state["rows_done"] == state["rows_total"]
    download = admin.get(state["download_url"])
    data = download.get_data()
    download.close()
    sheet = _xlsx(data)
    assert sheet[0][2] == "Action"
    assert [(row[2], row[4]) for row in sheet[1:]][: len(shown)] == shown
    assert len(sheet) - 1 == state["rows_total"]
    assert all(row[1] == COFFEE for row in sheet[1:])
    # The staff's exports are shared, but an audit log export is the admins' only.
    operator = signed_in(site, shop["tenant"], OPERATOR)
    for suffix in ("", "/status", "/download"):
        assert operator.get(f"{path}{suffix}").status_code == 404
    assert str(export_id) not in body(operator.get("/console/exports"))
    assert str(export_id) in body(admin.get("/console/exports"))
    file_name = _file_name(owner_engine, export_id)
    assert (Path(app.config["INSTANCE_DIR"]) / "exports" / file_name).is_file()


def _file_name(owner_engine, export_id) -> str:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(ReportExport.file_name).where(ReportExport.id == export_id)).scalar_one()


@pytest.fixture
def platform_admin(make, site):
    client = site("localhost")
    assert client.login(make.platform_admin()).status_code == 302
    return client


def test_the_platform_exports_every_tenants_audit_log_directly(shop, platform_admin, owner_engine):
    url = "/platform/audit?tenant=globex"
    html = body(platform_admin.get(url))
    form = _export_form(html, "audit")
    assert form == {"page": "audit", "tenant": "globex"}
    assert "Saved filters" not in html and "/platform/exports" not in html
    response = platform_admin.submit("/platform/audit/export", {**form, "format": "csv"}, form_page=url)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = _csv(response.get_data())
    shown = re.findall(EVENT, html)
    assert rows[0][:3] == ["When (UTC)", "Tenant", "Who"]
    assert [(row[3], row[5]) for row in rows[1:]] == shown
    assert {row[1] for row in rows[1:]} == {"globex"}
    # The export is in that tenant's own audit log.
    with owner_engine.connect() as conn:
        recorded = conn.execute(
            sa.select(AuditEvent.tenant_id, AuditEvent.actor_kind).where(AuditEvent.action == "report.exported")
        ).all()
    assert recorded == [(shop["other"].id, "platform")]


def test_the_platform_asks_to_narrow_the_filters_beyond_the_direct_limit(
    shop, platform_admin, small_direct_limit, owner_engine
):
    html = body(platform_admin.get("/platform/audit"))
    assert "for more, narrow the filters" in html
    response = platform_admin.submit(
        "/platform/audit/export", {"page": "audit", "format": "xlsx"}, form_page="/platform/audit"
    )
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/platform/audit"
    page = body(platform_admin.get(response.headers["Location"]))
    assert re.search(r"[0-9,]+ rows match, and this list exports at most 5 at once\. Narrow the filters", page)
    with owner_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ReportExport)).scalar_one() == 0
