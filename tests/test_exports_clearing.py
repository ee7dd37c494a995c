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

from clearing.models import SuspenseItem
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
