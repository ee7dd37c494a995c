"""Exports of the console's reconciliation lists: the suspense items. The file (CSV and Excel) holds
exactly the rows the page shows with the same filters, in the page's order (oldest first), never
another tenant's, and only the roles that may open the page export it."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import unescape

import openpyxl
import pytest
from pages import body, signed_in

from clearing.models import PayoutBatch, StatementImport, SuspenseItem
from core.db import db
from tenants.isolation import tenant_context

OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
OWNER = "owner@coffee.example.com"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ITEM_LINK = r'<a href="/console/suspense/([0-9a-f-]+)">'


def _item(tenant_id, channel, kind, amount, currency, days, description, **fields) -> SuspenseItem:
    return SuspenseItem(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        kind=kind,
        status=fields.pop("status", "open"),
        amount=amount,
        currency=currency,
        livemode=False,
        channel_account_id=channel,
        description=description,
        opened_at=datetime.now(UTC) - timedelta(days=days),
        **fields,
    )


@pytest.fixture
def acme(app, make):
    tenant = make.tenant("acme")
    make.merchant(tenant, "Coffee", OWNER)
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    channel = make.channel_account(tenant.id)
    other = make.tenant("globex")
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            db.session.add_all(
                [
                    _item(tenant.id, channel, "short", 3_000, "USD", 40, "payment not on the statement"),
                    _item(tenant.id, channel, "mismatch", 50, "USD", 10, "amounts differ", assignee=OPERATOR),
                    _item(tenant.id, None, "long", -1_250, "EUR", 2, "bank line only"),
                    _item(tenant.id, channel, "long", -700, "JPY", 1, "yen line", assignee=FINANCE),
                    _item(tenant.id, channel, "long", -100, "USD", 5, "resolved line", status="resolved"),
                ]
            )
            db.session.commit()
        with tenant_context(db.session, other.id):
            db.session.add(_item(other.id, None, "long", -999, "USD", 3, "globex line"))
            db.session.commit()
        db.session.remove()
    return tenant


def _export_form(html: str, page: str) -> dict[str, str]:
    form = re.search(
        rf'<form method="post" action="[^"]+" class="inline export-form" id="export-{page}">(.*?)</form>', html, re.S
    )
    assert form, f"no export form for {page} on the page"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1))
    return {name: unescape(value) for name, value in fields if name != "csrf_token"}


def _both(client, url: str, page: str):
    """The page's HTML, its export form's fields, and the CSV and Excel rows (header first)."""
    html = body(client.get(url))
    form = _export_form(html, page)
    files = []
    for fmt in ("csv", "xlsx"):
        response = client.submit("/console/exports", {**form, "format": fmt}, form_page=url)
        assert response.status_code == 200, (fmt, response.status_code)
        data = response.get_data()
        if fmt == "csv":
            assert response.mimetype == "text/csv"
            files.append(list(csv.reader(io.StringIO(data.decode("utf-8-sig")))))
        else:
            assert response.mimetype == XLSX
            files.append(list(openpyxl.load_workbook(io.BytesIO(data)).worksheets[0].iter_rows(values_only=True)))
    return html, form, files[0], files[1]


HEADER = [
    "Item",
    "Opened (UTC)",
    "Age (days)",
    "Kind",
    "Status",
    "Mode",
    "Source",
    "Currency",
    "Statement less platform",
    "Description",
    "Assignee",
    "Resolution",
    "Resolved (UTC)",
]


def test_suspense_items_export_with_the_filters_and_order_of_the_page(acme, site):
    client = signed_in(site, acme, FINANCE)
    html, form, rows, sheet = _both(client, "/console/suspense", "suspense")
    assert form == {"page": "suspense"}
    shown = re.findall(ITEM_LINK, html)
    assert len(shown) == 4  # the unresolved ones, oldest first
    assert rows[0] == HEADER
    assert [row[0] for row in rows[1:]] == shown
    assert [row[0] for row in sheet[1:]] == shown
    assert [row[3:10] for row in rows[1:]] == [
        ["short", "open", "test", "Sandbox", "USD", "-30.00", "payment not on the statement"],
        ["mismatch", "open", "test", "Sandbox", "USD", "-0.50", "amounts differ"],
        ["long", "open", "test", "Bank (test)", "EUR", "12.50", "bank line only"],
        ["long", "open", "test", "Sandbox", "JPY", "700", "yen line"],
    ]
    assert [row[2] for row in rows[1:]] == ["40", "10", "2", "1"]
    # Excel: exact Decimal major units, formatted with the currency's decimals.
    assert [row[8] for row in sheet[1:]] == [Decimal("-30"), Decimal("-0.5"), Decimal("12.5"), Decimal("700")]
    cells = openpyxl.load_workbook(
        io.BytesIO(client.submit("/console/exports", {**form, "format": "xlsx"}, form_page="/console/suspense").data)
    ).worksheets[0]
    assert [cells.cell(row=n, column=9).number_format for n in range(2, 6)] == [
        "#,##0.00",
        "#,##0.00",
        "#,##0.00",
        "#,##0",
    ]
    # Another tenant's items never appear.
    assert "globex line" not in {row[9] for row in rows[1:]}

    for url, expected_form, descriptions in (
        ("/console/suspense?kind=long&currency=eur", {"kind": "long", "currency": "eur"}, ["bank line only"]),
        ("/console/suspense?status=resolved", {"status": "resolved"}, ["resolved line"]),
        ("/console/suspense?status=all&kind=long", {"status": "all", "kind": "long"}, None),
        (f"/console/suspense?assignee={OPERATOR.upper()}", {"assignee": OPERATOR.upper()}, ["amounts differ"]),
        ("/console/suspense?mine=1", {"mine": "1"}, ["yen line"]),
    ):
        html, form, rows, sheet = _both(client, url, "suspense")
        assert form == {"page": "suspense", **expected_form}
        shown = re.findall(ITEM_LINK, html)
        assert [row[0] for row in rows[1:]] == shown, url
        assert [row[0] for row in sheet[1:]] == shown, url
        if descriptions is not None:
            assert [row[9] for row in rows[1:]] == descriptions, url
        else:
            assert len(shown) == 3 and "globex line" not in {row[9] for row in rows[1:]}
    # "Assigned to me" is whoever exports: the operator's item for the operator.
    operator = signed_in(site, acme, OPERATOR)
    _, _, rows, _ = _both(operator, "/console/suspense?mine=1", "suspense")
    assert [row[9] for row in rows[1:]] == ["amounts differ"]
    # A filter the page cannot use is ignored by the file too.
    html, form, rows, _ = _both(client, "/console/suspense?currency=EURO", "suspense")
    assert "is not an ISO 4217 currency code" in html
    assert [row[0] for row in rows[1:]] == re.findall(ITEM_LINK, html) and len(rows) == 5


def test_only_the_roles_that_read_suspense_export_it(acme, site):
    for email in (acme.admin_email, OPERATOR, FINANCE):
        client = signed_in(site, acme, email)
        _, _, rows, _ = _both(client, "/console/suspense?kind=short", "suspense")
        assert len(rows) == 2
    # A merchant's people have no console: neither the page nor its export.
    merchant = signed_in(site, acme, OWNER)
    assert merchant.get("/console/suspense").status_code in (302, 403)
    response = merchant.post("/console/exports", data={"page": "suspense", "format": "csv"})
    assert response.status_code in (302, 400, 403)
    assert not response.headers.get("Content-Disposition")


# --- statement imports and payout batches -------------------------------------------------------

IMPORT_LINK = r'<a href="/console/reconciliation/imports/([0-9a-f-]+)">'
BATCH_LINK = r'<a href="/console/payouts/batches/([0-9a-f-]+)">([^<]+)</a>'


def _import(tenant_id, channel, fmt, status, days, filename, **fields) -> StatementImport:
    return StatementImport(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        channel_account_id=channel,
        livemode=False,
        format=fmt,
        filename=filename,
        fingerprint=uuid.uuid4().hex,
        storage_path=f"statements/{uuid.uuid4()}",
        status=status,
        created_at=datetime.now(UTC) - timedelta(days=days),
        **fields,
    )


def _batch(tenant_id, reference, currency, livemode, total, days) -> PayoutBatch:
    return PayoutBatch(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        reference=reference,
        currency=currency,
        livemode=livemode,
        count=2,
        total=total,
        paid_count=1,
        failed_count=0,
        created_by=FINANCE,
        created_at=datetime.now(UTC) - timedelta(days=days),
    )


@pytest.fixture
def books(app, make):
    tenant = make.tenant("acme")
    make.merchant(tenant, "Coffee", OWNER)
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    channel = make.channel_account(tenant.id)
    other = make.tenant("globex")
    counts = {"lines": 3, "duplicates": 0, "matched": 2, "long": 1, "mismatch": 0, "short": 0}
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            db.session.add_all(
                [
                    _import(tenant.id, channel, "csv", "succeeded", 30, "march.csv", counts=counts),
                    _import(tenant.id, None, "mt940", "failed", 20, "bank.sta", error_line=4, error="bad amount"),
                    _import(tenant.id, None, "camt053", "succeeded", 3, "camt.xml", counts=counts),
                    _batch(tenant.id, "PB-USD-OLD", "USD", False, 123_456, 40),
                    _batch(tenant.id, "PB-EUR", "EUR", True, 1_250, 5),
                    _batch(tenant.id, "PB-JPY", "JPY", False, 7_000, 2),
                ]
            )
            db.session.commit()
        with tenant_context(db.session, other.id):
            db.session.add_all(
                [
                    _import(other.id, None, "csv", "succeeded", 1, "globex.csv"),
                    _batch(other.id, "PB-GLOBEX", "USD", False, 999, 1),
                ]
            )
            db.session.commit()
        db.session.remove()
    return tenant


def _day(days_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).date().isoformat()


def test_statement_imports_export_with_the_filters_of_the_page(books, site):
    client = signed_in(site, books, OPERATOR)
    html, form, rows, sheet = _both(client, "/console/reconciliation", "statement_imports")
    assert form == {"page": "statement_imports"}
    shown = re.findall(IMPORT_LINK, html)
    assert len(shown) == 3  # newest first, the tenant's only
    assert rows[0][:7] == ["Import", "Created (UTC)", "Source", "Mode", "File", "Format", "Status"]
    assert [row[0] for row in rows[1:]] == shown
    assert [row[0] for row in sheet[1:]] == shown
    assert [row[4] for row in rows[1:]] == ["camt.xml", "bank.sta", "march.csv"]
    assert [row[2] for row in rows[1:]] == ["Bank (test)", "Bank (test)", "Sandbox"]
    assert rows[2][13] == "line 4: bad amount"
    assert rows[3][7:13] == ["3", "0", "2", "1", "0", "0"]
    for url, expected, files in (
        ("/console/reconciliation?status=succeeded", {"status": "succeeded"}, ["camt.xml", "march.csv"]),
        ("/console/reconciliation?file_format=mt940", {"file_format": "mt940"}, ["bank.sta"]),
        (f"/console/reconciliation?from={_day(25)}", {"from": _day(25)}, ["camt.xml", "bank.sta"]),
    ):
        html, form, rows, sheet = _both(client, url, "statement_imports")
        assert form == {"page": "statement_imports", **expected}, url
        shown = re.findall(IMPORT_LINK, html)
        assert [row[0] for row in rows[1:]] == shown, url
        assert [row[0] for row in sheet[1:]] == shown, url
        assert [row[4] for row in rows[1:]] == files, url
    # A filter the page cannot use is ignored by the file too.
    html, _, rows, _ = _both(client, "/console/reconciliation?status=lost", "statement_imports")
    assert "is not an import status" in html
    assert len(rows) == 4 and "globex.csv" not in {row[4] for row in rows}


def test_payout_batches_export_with_the_filters_of_the_page(books, site):
    client = signed_in(site, books, FINANCE)
    html, form, rows, sheet = _both(client, "/console/payouts", "payout_batches")
    assert form == {"page": "payout_batches"}
    shown = [reference for _, reference in re.findall(BATCH_LINK, html)]
    assert shown == ["PB-JPY", "PB-EUR", "PB-USD-OLD"]
    assert rows[0] == [
        "Reference",
        "Created (UTC)",
        "Mode",
        "Currency",
        "Payouts",
        "Total",
        "Paid",
        "Failed",
        "Created by",
    ]
    assert [row[0] for row in rows[1:]] == shown
    assert [row[2:6] for row in rows[1:]] == [
        ["test", "JPY", "2", "7000"],
        ["live", "EUR", "2", "12.50"],
        ["test", "USD", "2", "1234.56"],
    ]
    # Excel holds numbers (read back as floats): the exact major units, written as text here.
    assert [Decimal(str(row[5])) for row in sheet[1:]] == [Decimal("7000"), Decimal("12.5"), Decimal("1234.56")]
    for url, expected, references in (
        ("/console/payouts?currency=usd", {"currency": "usd"}, ["PB-USD-OLD"]),
        ("/console/payouts?mode=live", {"mode": "live"}, ["PB-EUR"]),
        (f"/console/payouts?from={_day(10)}&mode=test", {"from": _day(10), "mode": "test"}, ["PB-JPY"]),
    ):
        html, form, rows, sheet = _both(client, url, "payout_batches")
        assert form == {"page": "payout_batches", **expected}, url
        shown = [reference for _, reference in re.findall(BATCH_LINK, html)]
        assert shown == references, url
        assert [row[0] for row in rows[1:]] == shown, url
        assert [row[0] for row in sheet[1:]] == shown, url
    html, _, rows, _ = _both(client, "/console/payouts?currency=EURO", "payout_batches")
    assert "is not an ISO 4217 currency code" in html
    assert len(rows) == 4 and "PB-GLOBEX" not in {row[0] for row in rows}


@pytest.mark.parametrize("page", ["statement_imports", "payout_batches"])
def test_a_merchant_user_gets_no_import_or_batch_file(books, site, page):
    merchant = signed_in(site, books, OWNER)
    response = merchant.post("/console/exports", data={"page": page, "format": "csv"})
    assert response.status_code in (302, 400, 403)
    assert not response.headers.get("Content-Disposition")
