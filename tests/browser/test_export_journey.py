"""A merchant exports 50,000 payments as Excel: the export runs as a job on a real worker, the page's
progress bar follows it to the end, and the downloaded file has every payment once.

The payments are seeded in SQL (tests/seeding.py); the worker is a real `flask worker --queue
exports` process writing where the web app reads. Screenshots: test-artifacts/export-*.png.
"""

from __future__ import annotations

import re

import openpyxl
import pytest
from conftest import PASSWORD
from playwright.sync_api import expect
from seeding import seed_payments
from workers import Workers

ROWS = 50_000
JOB_TIMEOUT_MS = 240_000


@pytest.fixture
def workers(app, owner_url, tmp_path):
    group = Workers(app, owner_url, tmp_path)
    group.env["PAYPLAT_INSTANCE_DIR"] = str(app.config["INSTANCE_DIR"])
    yield group
    group.stop_all()


def test_an_excel_export_of_50000_payments_with_a_progress_bar(
    page, live_server, make, owner_engine, workers, artifacts, tmp_path
):
    tenant = make.tenant("exporter", name="Exporter Pay")
    merchant = make.merchant(tenant, "Big Shop", "owner@big-shop.example.com")
    seed_payments(owner_engine, tenant.id, merchant, ROWS)

    page.goto(live_server.url(tenant.host, "/login"))
    page.get_by_label("E-mail", exact=True).fill("owner@big-shop.example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.locator("#signin-button").click()
    page.wait_for_url(live_server.url(tenant.host, "/merchant/"))
    page.get_by_role("link", name="Payments").click()
    expect(page.locator("#payment-list tbody tr")).to_have_count(25)
    expect(page.locator("#payment-list")).to_contain_text("pi_seed00000001")
    page.screenshot(path=str(artifacts / "export-1-payments.png"), full_page=True)

    # More rows than a direct download takes: the export becomes a job and the page follows it.
    page.locator("#export-payments").get_by_role("button", name="Excel").click()
    page.wait_for_url(re.compile(re.escape(live_server.url(tenant.host, "/merchant/exports/")) + r"[0-9a-f-]{36}$"))
    expect(page.get_by_text("rows are being written to a file")).to_be_visible()
    status = page.locator("#export-status")
    expect(status).to_have_attribute("data-status", "queued")
    bar = page.locator("progress#export-progress")
    expect(bar).to_have_attribute("max", str(ROWS))
    expect(page.locator("#export-download")).to_be_hidden()

    workers.start("export-worker", queue="exports")
    # The bar moves as the worker writes (the page polls the status; nothing reloads it).
    page.wait_for_function("() => document.getElementById('export-progress').value > 0", timeout=JOB_TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "export-2-progress.png"), full_page=True)
    page.wait_for_function(
        "() => document.getElementById('export-status').dataset.status === 'succeeded'", timeout=JOB_TIMEOUT_MS
    )
    assert bar.evaluate("bar => [bar.value, bar.max]") == [ROWS, ROWS], workers.logs()
    expect(page.locator("#export-count")).to_have_text(re.compile(r"50,000 / 50,000"))
    expect(status).to_have_text("The file is ready.")
    link = page.locator("#export-download-link")
    expect(link).to_be_visible()
    page.screenshot(path=str(artifacts / "export-3-done.png"), full_page=True)

    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert re.fullmatch(r"payments-\d{8}-\d{4}\.xlsx", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = next(rows)
        ids = [row[0] for row in rows]
    finally:
        book.close()
    assert header[:5] == ("Payment", "Created (UTC)", "Status", "Currency", "Amount")
    assert len(ids) == ROWS and len(set(ids)) == ROWS
    assert ids[0] == "pi_seed00000001"

    # The export is listed with its file.
    page.goto(live_server.url(tenant.host, "/merchant/exports"))
    expect(page.locator("#export-list tbody tr")).to_have_count(1)
    expect(page.locator("#export-list")).to_contain_text("50,000 / 50,000")
    expect(page.locator("#export-list").get_by_role("link", name="Download")).to_be_visible()

    # The same payments as charts: the reports page, per day, with the table beside each chart.
    page.get_by_role("link", name="Reports").click()
    figure = page.locator("figure.chart").first
    expect(figure.locator("figcaption")).to_have_text("Volume, refunds and fees per day in USD")
    expect(figure.get_by_role("img")).to_be_visible()
    expect(page.locator(".total-count")).to_have_text(f"{ROWS} / {ROWS}")
    page.screenshot(path=str(artifacts / "export-4-reports.png"), full_page=True)
