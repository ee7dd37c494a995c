"""Exports: a list's CSV and Excel files hold exactly the rows the page shows with the same filters;
large ones run as a job with progress and a download link; files belong to whoever asked, expire,
and a run repeated or taken over still leaves one complete file. Saved filters: save, list, apply,
replace, delete, per scope."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import openpyxl
import pytest
import sqlalchemy as sa
from pages import body, signed_in

from clearing import exports, listings
from clearing.models import ReportExport, SavedReportFilter
from core.db import db
from payments import intents
from payments.errors import CardError
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent

COFFEE = "owner@coffee.example.com"
COFFEE_STAFF = "staff@coffee.example.com"
BIKES = "owner@bikes.example.com"


@pytest.fixture
def shop(app, make):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", COFFEE)
    bikes = make.merchant(tenant, "Bikes", BIKES)
    make.user(tenant, COFFEE_STAFF, "staff", merchant_id=coffee)
    make.channel_account(tenant.id)
    make.channel_account(tenant.id, "Sandbox EUR", currency="EUR")
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, coffee, False)
        for n in range(12):
            intents.create(
                ctx,
                amount=150 * (n + 1),
                currency="eur" if n % 4 == 3 else "usd",
                payment_method="pm_card_visa",
                confirm=True,
                description=f"order {n}, “quoted”",
            )
        with pytest.raises(CardError):
            intents.create(ctx, amount=999, currency="usd", payment_method="pm_card_chargeDeclined", confirm=True)
        other = intents.MerchantContext(tenant.id, bikes, False)
        intents.create(other, amount=5000, currency="usd", payment_method="pm_card_visa", confirm=True)
        db.session.remove()
    return {"tenant": tenant, "coffee": coffee, "bikes": bikes}


def _page_ids(html: str) -> list[str]:
    return re.findall(r"<code>(pi_[A-Za-z0-9]+)</code>", html)


def _export_form(html: str, page: str = "payments") -> dict[str, str]:
    """The hidden fields of the page's export form: what a click on CSV or Excel sends."""
    form = re.search(
        rf'<form method="post" action="[^"]+" class="inline export-form" id="export-{page}">(.*?)</form>', html, re.S
    )
    assert form, "no export form on the page"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1))
    return {name: unescape(value) for name, value in fields if name != "csrf_token"}


def _get(client, url: str):
    """GET, the body read and the response closed (a download is a streamed file)."""
    response = client.get(url)
    response.data = response.get_data()
    response.close()
    return response


def _csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def _xlsx(data: bytes):
    book = openpyxl.load_workbook(io.BytesIO(data))
    return book.worksheets[0]


FILTERED = "/merchant/payments?status=succeeded&currency=usd&min=3&max=15.00"


def test_csv_and_excel_hold_the_rows_of_the_filtered_page(shop, site):
    client = signed_in(site, shop["tenant"], COFFEE)
    html = body(client.get(FILTERED))
    shown = _page_ids(html)
    assert len(shown) == 7  # the USD payments of 3.00 to 15.00 (not the declined one, not Bikes')
    form = _export_form(html)
    assert form == {"page": "payments", "status": "succeeded", "currency": "usd", "min": "3", "max": "15.00"}

    response = client.submit("/merchant/exports", {**form, "format": "csv"}, form_page=FILTERED)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith('attachment; filename="payments-')
    assert response.mimetype == "text/csv"
    rows = _csv(response.get_data())
    assert rows[0][:6] == ["Payment", "Created (UTC)", "Status", "Currency", "Amount", "Received"]
    assert [row[0] for row in rows[1:]] == shown
    # Amounts in major units, exactly, beside their currency.
    assert sorted((row[3], row[4]) for row in rows[1:]) == sorted(
        ("USD", amount) for amount in ("3.00", "4.50", "7.50", "9.00", "10.50", "13.50", "15.00")
    )
    assert all(row[8].startswith("order ") and "“quoted”" in row[8] for row in rows[1:])

    response = client.submit("/merchant/exports", {**form, "format": "xlsx"}, form_page=FILTERED)
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = _xlsx(response.get_data())
    values = list(sheet.iter_rows(values_only=True))
    assert list(values[0][:5]) == ["Payment", "Created (UTC)", "Status", "Currency", "Amount"]
    assert [row[0] for row in values[1:]] == shown
    amounts = {row[0]: row[4] for row in values[1:]}
    for csv_row in rows[1:]:
        assert Decimal(str(amounts[csv_row[0]])) == Decimal(csv_row[4])
    assert sheet.cell(row=2, column=5).number_format == "#,##0.00"
    assert isinstance(sheet.cell(row=2, column=5).value, (int, float))  # a number Excel can add up


def test_an_export_is_audited(shop, site, owner_engine):
    client = signed_in(site, shop["tenant"], COFFEE)
    client.submit("/merchant/exports", {"page": "payments", "format": "csv"}, form_page="/merchant/payments")
    with owner_engine.connect() as conn:
        actions = conn.execute(
            sa.text("SELECT action, actor_email FROM audit_events WHERE action LIKE 'report.%'")
        ).all()
    assert actions == [("report.exported", COFFEE)]


@pytest.fixture
def small_direct_limit(app):
    before = app.config["EXPORT_DIRECT_MAX_ROWS"]
    app.config["EXPORT_DIRECT_MAX_ROWS"] = 5
    yield
    app.config["EXPORT_DIRECT_MAX_ROWS"] = before


def _start_job(client, page="/merchant/payments", audience="merchant", **fields) -> str:
    html = body(client.get(page))
    form = _export_form(html, fields.pop("page_name", "payments"))
    response = client.submit(f"/{audience}/exports", {**form, "format": "xlsx", **fields}, form_page=page)
    assert response.status_code == 302, response.status_code
    path = urlsplit(response.headers["Location"]).path
    assert re.fullmatch(rf"/{audience}/exports/[0-9a-f-]{{36}}", path)
    return path


def test_a_large_export_runs_as_a_job_with_progress_and_a_download_link(app, shop, site, run_jobs, small_direct_limit):
    client = signed_in(site, shop["tenant"], COFFEE)
    shown = _page_ids(body(client.get("/merchant/payments")))
    assert len(shown) == 13
    path = _start_job(client)
    page = body(client.get(path))
    assert '<progress id="export-progress" max="13" value="0">' in page
    assert 'data-status="queued"' in page and "Waiting for a worker." in page
    state = client.get(f"{path}/status").get_json()
    assert (state["status"], state["rows_done"], state["rows_total"], state["download_url"]) == ("queued", 0, 13, None)

    assert run_jobs() >= 1
    state = client.get(f"{path}/status").get_json()
    assert (state["status"], state["rows_done"], state["rows_total"]) == ("succeeded", 13, 13)
    assert state["download_url"] == f"{path}/download"
    assert 'href="' + state["download_url"] + '"' in body(client.get(path))
    download = _get(client, state["download_url"])
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment; filename=payments-")
    values = list(_xlsx(download.data).iter_rows(values_only=True))
    assert [row[0] for row in values[1:]] == shown
    # The file lies under the instance folder with a random name, not the download name.
    with app.app_context(), tenant_context(db.session, shop["tenant"].id):
        export = db.session.get(ReportExport, (shop["tenant"].id, uuid.UUID(path.rsplit("/", 1)[1])))
        stored = Path(app.config["INSTANCE_DIR"]) / "exports" / export.file_name
        assert stored.is_file() and len(export.file_name) > 30 and "payments" not in export.file_name
        assert list(stored.parent.glob("*.part")) == []
        db.session.remove()
    listing = body(client.get("/merchant/exports"))
    assert state["download_url"] in listing


def test_exports_are_downloaded_only_by_who_asked(shop, site, run_jobs, small_direct_limit):
    coffee = signed_in(site, shop["tenant"], COFFEE)
    path = _start_job(coffee)
    run_jobs()
    export_id = path.rsplit("/", 1)[1]
    urls = [path, f"{path}/status", f"{path}/download"]
    # Another user of the same merchant: yes.
    staff = signed_in(site, shop["tenant"], COFFEE_STAFF)
    assert [_get(staff, url).status_code for url in urls] == [200, 200, 200]
    # Another merchant of the tenant, and the tenant's staff (a merchant's export is not theirs): 404.
    bikes = signed_in(site, shop["tenant"], BIKES)
    assert [bikes.get(url).status_code for url in urls] == [404, 404, 404]
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    assert [
        admin.get(f"/console/exports/{export_id}{suffix}").status_code for suffix in ("", "/status", "/download")
    ] == [404, 404, 404]
    assert export_id not in body(bikes.get("/merchant/exports")) and export_id not in body(
        admin.get("/console/exports")
    )
    # Nobody signed in: sent to sign in.
    anonymous = site(shop["tenant"].host)
    for url in urls:
        response = anonymous.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    # And the console's own export is the staff's, not the merchant's.
    console_path = _start_job(admin, "/console/payments", "console")
    run_jobs()
    console_id = console_path.rsplit("/", 1)[1]
    assert _get(admin, f"{console_path}/download").status_code == 200
    assert coffee.get(f"/merchant/exports/{console_id}/download").status_code == 404


def test_the_console_payments_export_names_merchants_and_follows_the_merchant_filter(shop, site):
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    page = "/console/payments?merchant=bik"
    html = body(admin.get(page))
    shown = _page_ids(html)
    assert len(shown) == 1
    response = admin.submit("/console/exports", {**_export_form(html), "format": "csv"}, form_page=page)
    rows = _csv(response.get_data())
    assert [(row[0], row[2], row[5]) for row in rows[1:]] == [(shown[0], "Bikes", "50.00")]


def _export_row(app, tenant_id, export_id) -> ReportExport:
    with app.app_context(), tenant_context(db.session, tenant_id):
        export = db.session.get(ReportExport, (tenant_id, export_id))
        db.session.expunge(export)
        db.session.remove()
    return export


def test_running_twice_or_being_taken_over_leaves_one_complete_file(app, shop):
    tenant_id = shop["tenant"].id
    scope = listings.Scope(tenant_id, shop["coffee"], ZoneInfo("UTC"))
    actor = Actor(kind="user", email=COFFEE)
    with app.app_context(), tenant_context(db.session, tenant_id):
        export = exports.request_export(scope, "payments", "csv", {"status": "succeeded"}, actor)
        export_id = export.id
        # A first run takes the export over, then (say its worker stalls) a second run takes it over
        # and finishes: the first one's next progress write finds it is no longer its own.
        first = exports._take_over(tenant_id, export_id, "first-run")
        assert first is not None
        assert exports.run_export(str(tenant_id), str(export_id)) == {"status": "succeeded", "rows": 12}
        assert exports._progress(tenant_id, export_id, "first-run", 5) is False
        # Run again after it finished: nothing is written again.
        assert exports.run_export(str(tenant_id), str(export_id)) == {"status": "succeeded"}
        db.session.remove()
    done = _export_row(app, tenant_id, export_id)
    assert (done.status, done.rows_done, done.rows_total, done.attempts) == ("succeeded", 12, 12, 2)
    folder = Path(app.config["INSTANCE_DIR"]) / "exports"
    assert len(_csv((folder / done.file_name).read_bytes())) == 1 + 12
    assert list(folder.glob(f"{done.file_name}*.part")) == []


def test_the_sweep_expires_old_exports_and_deletes_their_files(app, shop, site, run_jobs, small_direct_limit):
    client = signed_in(site, shop["tenant"], COFFEE)
    path = _start_job(client)
    run_jobs()
    export_id = uuid.UUID(path.rsplit("/", 1)[1])
    done = _export_row(app, shop["tenant"].id, export_id)
    stored = Path(app.config["INSTANCE_DIR"]) / "exports" / done.file_name
    assert stored.is_file()
    assert done.expires_at - done.finished_at == timedelta(hours=app.config["EXPORT_TTL_HOURS"])
    with app.app_context():
        assert exports.sweep(now=done.expires_at - timedelta(seconds=1)) == {"resumed": 0, "expired": 0}
        assert exports.sweep(now=done.expires_at + timedelta(seconds=1)) == {"resumed": 0, "expired": 1}
        db.session.remove()
    assert not stored.exists()
    assert client.get(f"{path}/download").status_code == 404
    assert client.get(f"{path}/status").get_json()["status"] == "expired"
    assert "has expired" in body(client.get(path))


def test_the_sweep_requeues_an_export_whose_run_went_quiet(app, shop, run_jobs):
    tenant_id = shop["tenant"].id
    scope = listings.Scope(tenant_id, shop["coffee"], ZoneInfo("UTC"))
    with app.app_context(), tenant_context(db.session, tenant_id):
        export = exports.request_export(scope, "payments", "xlsx", {}, Actor(kind="user", email=COFFEE))
        export_id = export.id
        # Its worker died after taking it over: the row says running, and nothing progresses.
        assert exports._take_over(tenant_id, export_id, "dead-run") is not None
        db.session.remove()
    from portal import jobs

    with app.app_context():
        jobs.queue("exports").empty()
        now = datetime.now(UTC)
        assert exports.sweep(now=now)["resumed"] == 0
        assert exports.sweep(now=now + exports.STALE_AFTER + timedelta(seconds=1))["resumed"] == 1
        db.session.remove()
    run_jobs()
    done = _export_row(app, tenant_id, export_id)
    assert (done.status, done.rows_done) == ("succeeded", 13)


# --- saved filters ---------------------------------------------------------------------------------


def _saved(owner_engine) -> list[tuple]:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT page, name, filters, merchant_id FROM saved_report_filters ORDER BY name")
        ).all()


def test_saved_filters_save_list_apply_replace_and_delete(shop, site, owner_engine):
    coffee = signed_in(site, shop["tenant"], COFFEE)
    query = "status=succeeded&currency=USD&q="
    response = coffee.submit(
        "/merchant/saved-filters",
        {"page": "payments", "query": query, "name": "  Paid in   USD "},
        form_page="/merchant/payments",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/merchant/payments?status=succeeded&currency=USD"
    assert _saved(owner_engine) == [
        ("payments", "Paid in USD", {"status": "succeeded", "currency": "USD"}, shop["coffee"])
    ]
    html = body(coffee.get("/merchant/payments"))
    assert re.search(r'<a href="/merchant/payments\?status=succeeded&amp;currency=USD">Paid in USD</a>', html)
    # Applying it shows the filtered list.
    assert len(_page_ids(body(coffee.get("/merchant/payments?status=succeeded&currency=USD")))) == 9
    # The same name again replaces the filters.
    coffee.submit(
        "/merchant/saved-filters",
        {"page": "payments", "query": "currency=EUR", "name": "Paid in USD"},
        form_page="/merchant/payments",
    )
    assert [row[2] for row in _saved(owner_engine)] == [{"currency": "EUR"}]
    # A name is needed: the form comes back with the reason next to the field, the filters kept.
    response = coffee.submit(
        "/merchant/saved-filters",
        {"page": "payments", "query": "status=canceled", "name": " "},
        form_page="/merchant/payments",
    )
    assert response.status_code == 422
    html = body(response)
    assert 'id="save-filter-payments-error" class="error">Give the filter a name' in html
    assert 'aria-invalid="true"' in html and "<code>status=canceled</code>" in html
    # Other merchants and the tenant's staff neither see nor delete it; the merchant's other users do both.
    item_id = _saved_id(owner_engine)
    bikes = signed_in(site, shop["tenant"], BIKES)
    assert "Paid in USD" not in body(bikes.get("/merchant/payments"))
    response = bikes.submit(f"/merchant/saved-filters/{item_id}/delete", form_page="/merchant/payments")
    assert response.status_code == 404
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    assert admin.submit(f"/console/saved-filters/{item_id}/delete", form_page="/console/payments").status_code == 404
    staff = signed_in(site, shop["tenant"], COFFEE_STAFF)
    assert "Paid in USD" in body(staff.get("/merchant/payments"))
    response = staff.submit(f"/merchant/saved-filters/{item_id}/delete", form_page="/merchant/payments")
    assert response.status_code == 302
    assert _saved(owner_engine) == []
    assert "Paid in USD" not in body(coffee.get("/merchant/payments"))


def _saved_id(owner_engine) -> uuid.UUID:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(SavedReportFilter.id)).scalar_one()


def test_the_console_saves_report_filters_for_its_staff(shop, site, owner_engine):
    admin = signed_in(site, shop["tenant"], shop["tenant"].admin_email)
    response = admin.submit(
        "/console/saved-filters",
        {"page": "reports", "query": "period=month&by=merchant&unknown=1", "name": "Monthly by merchant"},
        form_page="/console/reports",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/reports?period=month&by=merchant"
    assert _saved(owner_engine) == [("reports", "Monthly by merchant", {"period": "month", "by": "merchant"}, None)]
    html = body(admin.get("/console/reports"))
    assert "Monthly by merchant" in html
    coffee = signed_in(site, shop["tenant"], COFFEE)
    assert "Monthly by merchant" not in body(coffee.get("/merchant/reports"))
    # A page that does not exist is refused.
    response = admin.submit("/console/saved-filters", {"page": "nowhere", "name": "x"}, form_page="/console/reports")
    assert response.status_code == 404


def test_audit_of_job_exports(shop, site, small_direct_limit, owner_engine):
    client = signed_in(site, shop["tenant"], COFFEE)
    _start_job(client)
    with owner_engine.connect() as conn:
        events = sa.select(AuditEvent.action, AuditEvent.actor_email).where(AuditEvent.action.like("report.%"))
        assert conn.execute(events).all() == [("report.export_requested", COFFEE)]
