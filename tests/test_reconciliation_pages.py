"""Reconciliation pages: the console saves each source's CSV column mapping, uploads statements
(a channel's CSV, the bank's CAMT.053) or fetches them through the channel, follows their imports
(progress, counts, the line a refused file went wrong on, the lines and what they matched), and
works the suspense items: the list by age with its report, and an item's workflow (assign,
comment, match, adjust, a write-off requested by one person and approved by another)."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import sqlalchemy as sa
from pages import body
from pages import signed_in as _signed_in
from pages import table as _table
from pages import text as _text

import ledger
from clearing import payouts, reconciliation, suspense
from clearing.models import ClearingRun, StatementImport, StatementLine, StatementMapping, SuspenseItem
from clearing.statement_formats import ColumnMapping
from core.db import db
from payments import balance_operations, intents, refunds
from portal.console import reconciliation as reconciliation_pages
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent

FORBIDDEN = "Your account is not allowed to open this page."
OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
CONTROLLER = "controller@acme.example.com"  # a second finance user: approves write-offs
OWNER = "owner@coffee.example.com"
STAFF = "staff@coffee.example.com"
SYSTEM = Actor.system()
MAPPING = {
    "reference": "ref",
    "amount": "amount",
    "date": "date",
    "date_format": "%Y-%m-%d",
    "currency": "currency",
    "fixed_currency": "",
    "type": "type",
    "description": "",
}


@pytest.fixture
def acme(make):
    """A tenant with staff of every role (two finance users), a merchant with its users, and a
    sandbox channel account (test mode, USD)."""
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    make.user(tenant, CONTROLLER, "finance")
    coffee = make.merchant(tenant, "Coffee", OWNER)
    make.user(tenant, STAFF, "staff", merchant_id=coffee)
    channel = make.channel_account(tenant.id)
    return tenant, coffee, channel


# --- helpers -------------------------------------------------------------------------------


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _pay(app, tenant, merchant, amount) -> tuple[str, str]:
    """A captured test-mode card payment through the sandbox: its id and the channel's reference."""
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, merchant, livemode=False)
        pi = intents.create(ctx, amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True)
        made = pi.id, pi.channel_reference
        db.session.remove()
    return made


def _refund(app, tenant, merchant, pi_id, amount) -> str:
    with app.app_context(), tenant_context(db.session, tenant.id):
        refund = refunds.create(
            intents.MerchantContext(tenant.id, merchant, False), payment_intent=pi_id, amount=amount
        )
        refund_id = refund.id
        db.session.remove()
    return refund_id


def _csv(*rows, header: str = "ref,amount,currency,date,type") -> bytes:
    lines = [header] + [f"{ref},{amount},USD,{_today()},{kind}" for ref, amount, kind in rows]
    return ("\n".join(lines) + "\n").encode()


def _mapping(app, tenant, channel):
    """The channel's CSV mapping saved through the use case (the page is tested on its own)."""
    with app.app_context(), tenant_context(db.session, tenant.id):
        mapping = ColumnMapping(reference="ref", amount="amount", date="date", currency="currency", type="type")
        reconciliation.save_mapping(tenant.id, channel, mapping, SYSTEM)
        db.session.commit()
        db.session.remove()


def _rows(html: str, table_id: str, row_class: str) -> list[list[str]]:
    rows = re.findall(rf'<tr class="{row_class}">(.*?)</tr>', _table(html, table_id), re.S)
    return [[_text(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)] for row in rows]


def _error(html: str, field: str) -> str:
    match = re.search(rf'<p id="{field}-error" class="error">([^<]*)</p>', html)
    assert match, f"no error at the field {field}"
    return unescape(match.group(1))


def _refused(html: str) -> list[str]:
    return [unescape(m) for m in re.findall(r'<p class="error form-error" role="alert">([^<]*)</p>', html)]


def _facts(html: str, dl_id: str) -> str:
    match = re.search(rf'<dl class="facts" id="{dl_id}">(.*?)</dl>', html, re.S)
    assert match, f"no facts {dl_id} on the page"
    return _text(match.group(1))


def _link(html: str, text: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)">{re.escape(text)}</a>', html)
    return unescape(match.group(1)) if match else None


def _local(at) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    """A multipart body as a browser sends it. (Built here: for a large body the test client would
    spool it to a temporary file that nobody closes.)"""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    if file is not None:
        name, data = file
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        parts.append(data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _upload(client, data: bytes | None, name: str = "statement.csv", *, source, fmt: str = "csv", **kwargs):
    fields = {"csrf_token": client.csrf_token("/console/reconciliation"), "source": str(source), "format": fmt}
    payload, content_type = _multipart(fields, None if data is None else (name, data))
    return client.post("/console/reconciliation/imports", data=payload, content_type=content_type, **kwargs)


def _save_mapping(client, key, **fields):
    """POST one source's mapping form (its fields and CSRF token carry the source as their prefix)."""
    data = {"source": str(key), f"{key}-csrf_token": client.csrf_token("/console/reconciliation/mappings")}
    data.update({f"{key}-{name}": value for name, value in {**MAPPING, **fields}.items()})
    return client.post("/console/reconciliation/mappings", data=data)


def _imports(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(StatementImport.__table__).order_by(StatementImport.created_at)).all()


def _lines(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(StatementLine.__table__).order_by(StatementLine.line_no)).all()


def _items(owner_engine) -> list[sa.Row]:
    """Suspense items: by kind (long, mismatch, short), then amount."""
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.select(SuspenseItem.__table__).order_by(SuspenseItem.kind, SuspenseItem.amount, SuspenseItem.id)
        ).all()


def _item(owner_engine, item_id) -> sa.Row:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(SuspenseItem.__table__).where(SuspenseItem.id == item_id)).one()


def _mappings(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(StatementMapping.__table__)).all()


def _actions(owner_engine, prefix: str) -> list[tuple[str, str]]:
    with owner_engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(AuditEvent.action, AuditEvent.actor_email)
                .where(AuditEvent.action.like(f"{prefix}%"))
                .order_by(AuditEvent.created_at, AuditEvent.id)
            )
        ]


def _suspense_balance(app, tenant) -> int:
    with app.app_context(), tenant_context(db.session, tenant.id):
        balance = ledger.account(tenant.id, "suspense", "USD", False).balance
        db.session.remove()
    return balance


def _imported(app, tenant, channel, data: bytes, filename: str = "setup.csv") -> uuid.UUID:
    """A statement stored and imported at once (the worker's part is tested through the pages)."""
    with app.app_context(), tenant_context(db.session, tenant.id):
        stored = reconciliation.store_upload(
            tenant.id,
            io.BytesIO(data),
            filename=filename,
            fmt="csv",
            channel_account_id=channel,
            livemode=None,
            upload_dir=app.config["UPLOAD_DIR"],
            actor=SYSTEM,
        )
        reconciliation.run_import(tenant.id, stored.import_.id)
        import_id = stored.import_.id
        db.session.remove()
    return import_id


# --- mappings, uploads and imports ---------------------------------------------------------


def test_finance_saves_a_mapping_uploads_a_statement_and_follows_its_import(app, acme, site, owner_engine, run_jobs):
    tenant, coffee, channel = acme
    paid, paid_ref = _pay(app, tenant, coffee, 1_000)
    differs, differs_ref = _pay(app, tenant, coffee, 2_000)
    missing, _ = _pay(app, tenant, coffee, 3_000)
    finance = _signed_in(site, tenant, FINANCE)

    html = body(finance.get("/console/reconciliation"))
    assert 'href="/console/reconciliation"' in html and 'href="/console/suspense"' in html  # the nav links
    assert "No statements imported yet." in html and '<meta http-equiv="refresh"' not in html
    assert 'href="/console/reconciliation/mappings"' in html
    formats = re.search(r'<select[^>]*name="format"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'value="([a-z0-9]+)"', formats) == ["csv", "mt940", "camt053", "alipay", "wechat"]
    sources = re.search(r'<select[^>]*name="source"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'value="([^"]+)"', sources) == [str(channel), "bank-live", "bank-test"]

    # A CSV needs its source's mapping first.
    data = _csv((paid_ref, "10.00", "charge"), (differs_ref, "19.50", "charge"), ("ch_unknown", "7.00", "charge"))
    response = _upload(finance, data, source=channel)
    assert response.status_code == 422
    assert _error(body(response), "format") == "Save this source's CSV column mapping first."
    assert _imports(owner_engine) == []

    html = body(finance.get("/console/reconciliation/mappings"))
    for key in (channel, "bank"):
        section = re.search(rf'<section class="mapping" id="mapping-{key}">(.*?)</section>', html, re.S).group(1)
        assert "No mapping yet: CSV statements of this source cannot be imported until one is saved." in section
        assert f'name="{key}-date_format" type="text" value="%Y-%m-%d"' in section
    response = _save_mapping(finance, channel, amount=" ", fixed_currency="EURO", date_format="%Y")
    assert response.status_code == 422
    html = body(response)
    assert "is not an ISO 4217 currency code" in _error(html, f"{channel}-fixed_currency")
    assert _error(html, f"{channel}-date_format") == (
        "'%Y' does not read a whole date back: give the year, month and day, like %Y-%m-%d."
    )
    assert f'name="{channel}-fixed_currency" type="text" value="EURO"' in html
    assert f'name="{channel}-reference" type="text" value="ref"' in html
    assert 'name="bank-reference" type="text" value=""' in html  # the other source's form, untouched
    response = _save_mapping(finance, channel, amount=" ")
    assert response.status_code == 422
    assert _error(body(response), f"{channel}-amount") == "Name the column that holds the amount."
    assert _mappings(owner_engine) == []
    response = _save_mapping(finance, channel, date_format="")  # empty: the default
    assert response.status_code == 302
    html = body(finance.get(response.headers["Location"]))
    assert "CSV column mapping of Sandbox (sandbox, test, USD) saved" in html
    assert f'name="{channel}-amount" type="text" value="amount"' in html
    [saved] = _mappings(owner_engine)
    assert (saved.channel_account_id, saved.mapping["reference"], saved.mapping["currency"]) == (
        channel,
        "ref",
        "currency",
    )
    assert saved.mapping["date_format"] == "%Y-%m-%d" and saved.mapping["fixed_currency"] is None
    assert _actions(owner_engine, "reconciliation.mapping") == [("reconciliation.mapping_saved", FINANCE)]

    response = _upload(finance, data, source=channel)
    assert response.status_code == 302
    [row] = _imports(owner_engine)
    assert response.headers["Location"].endswith(f"/console/reconciliation/imports/{row.id}")
    assert (row.filename, row.format, row.channel_account_id, row.status, row.uploaded_by) == (
        "statement.csv",
        "csv",
        channel,
        "queued",
        FINANCE,
    )
    html = body(finance.get(response.headers["Location"]))
    assert "statement.csv is stored and its import is queued: this page follows its progress." in html
    assert '<meta http-equiv="refresh" content="3">' in html and '<progress aria-label="Waiting to start">' in html
    assert _facts(html, "import-facts").startswith("Source Sandbox Format CSV")
    assert "Status queued" in _facts(html, "import-facts")
    html = body(finance.get("/console/reconciliation"))
    assert '<meta http-equiv="refresh" content="3">' in html
    [listed] = _rows(html, "import-list", "import")
    assert listed[1:5] == ["Sandbox", "statement.csv", "csv", "queued"] and listed[5].endswith("0 / 0 lines")

    assert run_jobs() >= 1
    page = f"/console/reconciliation/imports/{row.id}"
    html = body(finance.get(page))
    assert '<meta http-equiv="refresh"' not in html and "Status succeeded" in _facts(html, "import-facts")
    assert _facts(html, "import-counts") == (
        f"Days {_today()} to {_today()} Lines 3 New 3 Already imported 0 (from an earlier, overlapping file) "
        "Matched 1 Statement only 1 Amounts differ 1 Platform only 1 (possible loss) Platform only, now found 0"
    )
    assert [r[:8] for r in _rows(html, "line-list", "line")] == [
        ["2", _today(), paid_ref, "payment", "10.00 USD", "matched", f"payment {paid}", "—"],
        ["3", _today(), differs_ref, "payment", "19.50 USD", "mismatch", f"payment {differs}", "Item"],
        ["4", _today(), "ch_unknown", "payment", "7.00 USD", "long", "—", "Item"],
    ]
    assert f"/merchant/payments/{paid}" not in html  # ids only: tenant staff have no payment page
    [listed] = _rows(body(finance.get("/console/reconciliation")), "import-list", "import")
    assert listed[4:7] == [
        "succeeded",
        "—",
        "3 lines (0 already imported), 1 matched; 1 statement only, 1 amounts differ, 1 platform only",
    ]
    html = body(finance.get(f"{page}?status=long"))
    assert [r[2] for r in _rows(html, "line-list", "line")] == ["ch_unknown"]
    html = body(finance.get(f"{page}?status=lost"))
    assert _error(html, "status") == "'lost' is not a line status." and len(_rows(html, "line-list", "line")) == 3
    assert {(i.kind, i.record_id) for i in _items(owner_engine)} == {
        ("long", None),
        ("mismatch", differs),
        ("short", missing),
    }

    # The same file again, under another name: already imported, nothing new; back at the first import.
    response = _upload(finance, data, "statement-copy.csv", source=channel)
    assert response.status_code == 302 and response.headers["Location"].endswith(page)
    html = body(finance.get(response.headers["Location"]))
    assert (
        f"statement-copy.csv was already imported on {_local(row.created_at)} (UTC) as statement.csv: nothing was "
        "imported again. Here is that import." in unescape(html)
    )
    assert len(_imports(owner_engine)) == 1 and len(_lines(owner_engine)) == 3 and len(_items(owner_engine)) == 3
    assert _actions(owner_engine, "reconciliation.file") == [("reconciliation.file_uploaded", FINANCE)]


def test_a_malformed_file_fails_naming_its_line_and_a_fixed_mapping_imports_it(app, acme, site, owner_engine, run_jobs):
    tenant, coffee, channel = acme
    _, ref = _pay(app, tenant, coffee, 1_000)
    _mapping(app, tenant, channel)
    finance = _signed_in(site, tenant, FINANCE)

    response = _upload(finance, _csv((ref, "10.00", "charge"), ("ch_x", "ten", "charge")), "bad.csv", source=channel)
    assert response.status_code == 302
    assert run_jobs() >= 1
    [row] = _imports(owner_engine)
    html = body(finance.get(response.headers["Location"]))
    assert "Status failed" in _facts(html, "import-facts") and '<meta http-equiv="refresh"' not in html
    error = _text(re.search(r'<div class="error" role="alert" id="import-error">(.*?)</div>', html, re.S).group(1))
    assert "The file was refused: nothing of it was imported. line 3: 'ten' is not an amount" in error
    assert "No lines imported." in html and 'id="import-counts"' not in html
    [listed] = _rows(body(finance.get("/console/reconciliation")), "import-list", "import")
    assert listed[4:7] == ["failed", "—", "line 3: 'ten' is not an amount"]
    assert (row.status, row.error_line) == ("failed", 3) and _lines(owner_engine) == [] and _items(owner_engine) == []

    # A file whose header the mapping does not fit is refused at line 1; with the mapping corrected, the same
    # file uploaded again is imported again (and not refused as already imported).
    data = _csv((ref, "10.00", "charge"), header="reference,amount,currency,date,type")
    response = _upload(finance, data, "renamed.csv", source=channel)
    assert run_jobs() >= 1
    html = body(finance.get(response.headers["Location"]))
    assert "line 1: the header has no column 'ref' (for reference)" in unescape(html)
    assert _save_mapping(finance, channel, reference="Reference").status_code == 302
    first_try = response.headers["Location"]
    response = _upload(finance, data, "renamed-again.csv", source=channel)
    assert response.status_code == 302 and response.headers["Location"] == first_try
    html = body(finance.get(response.headers["Location"]))
    assert (
        "renamed-again.csv was imported before and refused (line 1: the header has no column 'ref' (for "
        "reference)); it is imported again now." in unescape(html)
    )
    assert "Status queued" in _facts(html, "import-facts")
    assert run_jobs() >= 1
    html = body(finance.get(response.headers["Location"]))
    assert "Status succeeded" in _facts(html, "import-facts") and "Matched 1" in _facts(html, "import-counts")
    assert [(r.filename, r.status) for r in _imports(owner_engine)] == [
        ("bad.csv", "failed"),
        ("renamed.csv", "succeeded"),
    ]


def test_the_imports_and_an_imports_lines_are_paged(app, acme, site):
    tenant, _, channel = acme
    _mapping(app, tenant, channel)
    big = _imported(app, tenant, channel, _csv(*[(f"ch_{n:02}", "1.00", "charge") for n in range(54)], ("", "2", "x")))
    made = [big] + [
        _imported(app, tenant, channel, _csv((f"ch_day_{n}", "1.00", "charge")), f"day-{n:02}.csv") for n in range(25)
    ]
    finance = _signed_in(site, tenant, FINANCE)
    html = body(finance.get("/console/reconciliation"))
    names = [row[2] for row in _rows(html, "import-list", "import")]
    assert names == [f"day-{n:02}.csv" for n in range(24, -1, -1)]  # newest first
    older = _link(html, "Older →")
    html = body(finance.get(older))
    assert [row[2] for row in _rows(html, "import-list", "import")] == ["setup.csv"] and _link(html, "Older →") is None
    assert _link(html, "← Newest") == "/console/reconciliation#imports"
    assert f'href="/console/reconciliation/imports/{made[0]}"' in html

    page = f"/console/reconciliation/imports/{big}"
    html = body(finance.get(page))
    rows = _rows(html, "line-list", "line")
    assert [row[0] for row in rows] == [str(n) for n in range(2, 52)]  # file order, 50 a page
    html = body(finance.get(_link(html, "Next →")))
    assert [row[0] for row in _rows(html, "line-list", "line")] == ["52", "53", "54", "55", "56"]
    assert _rows(html, "line-list", "line")[-1][2:6] == ["—", "other", "2.00 USD", "long"]
    assert _link(html, "Next →") is None and _link(html, "← First") == f"{page}#lines"
    # The filter is kept from page to page.
    html = body(finance.get(f"{page}?status=long"))
    following = _link(html, "Next →")
    assert "status=long" in following and len(_rows(html, "line-list", "line")) == 50
    assert len(_rows(body(finance.get(following)), "line-list", "line")) == 5
    assert "No lines match." in body(finance.get(f"{page}?status=matched"))
    html = body(finance.get(f"{page}?after=garbled"))
    assert "That page link could not be read; here are the first lines." in html
    assert _rows(html, "line-list", "line")[0][0] == "2"


def test_the_upload_form_refuses_what_it_cannot_store(app, acme, site, owner_engine, monkeypatch):
    tenant, _, channel = acme
    _mapping(app, tenant, channel)
    finance = _signed_in(site, tenant, FINANCE)
    # The statement limit, lowered for the test, is still above the app's own request limit (4 MiB): a body that
    # large reaches the view (no 413) and is refused by the statement's own limit, at the field.
    monkeypatch.setattr(reconciliation_pages, "STATEMENT_MAX_BYTES", 5 * 1024 * 1024)
    for data, fmt, field, message in [
        (b"x" * (5 * 1024 * 1024 + 1), "csv", "file", "The file is larger than 5 MB."),
        (b"", "csv", "file", "The file is empty."),
        (None, "csv", "file", "Choose the statement file."),
        (b"ref\n", "channel", "format", "Not a valid choice."),  # only a fetch writes the channel format
        (b"ref\n", "mt941", "format", "Not a valid choice."),
    ]:
        response = _upload(finance, data, source=channel, fmt=fmt)
        assert response.status_code == 422, message
        html = body(response)
        assert _error(html, field) == message
        assert f'<option selected value="{channel}">' in html  # the source as chosen
    response = _upload(finance, b"ref\n", source=uuid.uuid4())
    assert response.status_code == 422 and _error(body(response), "source") == "Not a valid choice."
    assert _imports(owner_engine) == []


def test_a_bank_statement_in_camt053_matches_a_sent_payout(app, acme, site, owner_engine, run_jobs):
    tenant, coffee, _ = acme
    with app.app_context(), tenant_context(db.session, tenant.id):
        ctx = intents.MerchantContext(tenant.id, coffee, False)
        balance_operations.create_topup(ctx, amount=50_000, currency="eur")
        payout = balance_operations.create_payout(ctx, amount=12_345, currency="eur").id
        payouts.set_bank_account(
            tenant.id, coffee, holder_name="Coffee", account="DE89370400440532013000", actor=SYSTEM
        )
        db.session.commit()
        run = ClearingRun(tenant_id=tenant.id, kind="payout_batch")
        db.session.add(run)
        db.session.commit()
        payouts.create_batches(tenant.id, run, FINANCE)
        db.session.remove()
    camt = f"""<?xml version="1.0"?>
    <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt>
      <Ntry><Amt Ccy="EUR">123.45</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>{_today()}</Dt></BookgDt>
        <NtryDtls><TxDtls><Refs><EndToEndId>{payout}</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>
      <Ntry><Amt Ccy="EUR">5.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>{_today()}</Dt></BookgDt></Ntry>
    </Stmt></BkToCstmrStmt></Document>""".encode()
    finance = _signed_in(site, tenant, FINANCE)
    response = _upload(finance, camt, "bank.xml", source="bank-test", fmt="camt053")
    assert response.status_code == 302
    assert run_jobs() >= 1
    [row] = _imports(owner_engine)
    assert (row.channel_account_id, row.livemode, row.format) == (None, False, "camt053")
    html = body(finance.get(response.headers["Location"]))
    assert _facts(html, "import-facts").startswith("Source Bank (test) Format CAMT.053 (ISO 20022 bank statement, XML)")
    assert "Matched 1 Statement only 1 Amounts differ 0 Platform only 0" in _facts(html, "import-counts")
    assert [r[:7] for r in _rows(html, "line-list", "line")] == [
        ["1", _today(), payout, "payout", "-123.45 EUR", "matched", f"payout {payout}"],
        ["2", _today(), "—", "payout", "-5.00 EUR", "long", "—"],
    ]
    [item] = _items(owner_engine)
    html = body(finance.get(f"/console/suspense/{item.id}"))
    assert "Amount statement only: -5.00 EUR" in _facts(html, "item-facts")
    assert "Source Bank (test)" in _facts(html, "item-facts")


def test_a_statement_is_fetched_from_the_sandbox_channel(app, acme, make, site, owner_engine, run_jobs):
    tenant, coffee, channel = acme
    paid, _ = _pay(app, tenant, coffee, 1_500)
    refund = _refund(app, tenant, coffee, paid, 500)
    live = make.channel_account(tenant.id, "Live sandbox", mode="live")
    finance = _signed_in(site, tenant, FINANCE)
    html = body(finance.get("/console/reconciliation"))
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert f'name="day" type="date" value="{yesterday}"' in html
    accounts = re.search(r'<select[^>]*name="channel_account_id"[^>]*>(.*?)</select>', html, re.S).group(1)
    assert set(re.findall(r'value="([^"]+)"', accounts)) == {str(channel), str(live)}

    def fetch(account, day):
        return finance.submit(
            "/console/reconciliation/fetch", {"channel_account_id": str(account), "day": day}, "/console/reconciliation"
        )

    for day, message in [
        ("31.12.2026", "'31.12.2026' is not a day: use the form 2026-03-31."),
        ("", "Give the day, like 2026-03-31."),
        (
            (datetime.now(UTC).date() + timedelta(days=2)).isoformat(),
            "That day has not begun yet: the channel has no statement for it.",
        ),
    ]:
        response = fetch(channel, day)
        assert response.status_code == 422
        html = body(response)
        assert _error(html, "day") == message and f'name="day" type="date" value="{day}"' in html
    # A channel that fails says so, and nothing is stored.
    response = fetch(live, _today())
    assert response.status_code == 502
    refused = _refused(body(response))
    assert len(refused) == 1 and refused[0].startswith(f"The channel did not deliver the statement of {_today()}: ")
    assert "takes test payments only" in refused[0] and refused[0].endswith("Nothing was imported; try again later.")
    assert _imports(owner_engine) == []

    response = fetch(channel, _today())
    assert response.status_code == 302
    html = body(finance.get(response.headers["Location"]))
    assert f"The statement of {_today()} from Sandbox is stored and its import is queued" in html
    assert run_jobs() >= 1
    html = body(finance.get(response.headers["Location"]))
    assert _facts(html, "import-facts").startswith("Source Sandbox Format Fetched from the channel")
    counts = _facts(html, "import-counts")
    assert "Lines 2 New 2" in counts and "Matched 2 Statement only 0 Amounts differ 0 Platform only 0" in counts
    assert {r[6] for r in _rows(html, "line-list", "line")} == {f"payment {paid}", f"refund {refund}"}
    [row] = _imports(owner_engine)
    assert (row.format, row.filename, row.uploaded_by) == ("channel", f"Sandbox {_today()} (fetched)", FINANCE)

    response = fetch(channel, _today())
    html = body(finance.get(response.headers["Location"]))
    assert f"The statement of {_today()} from Sandbox was already imported on" in html
    assert len(_imports(owner_engine)) == 1


# --- suspense ------------------------------------------------------------------------------


def test_the_suspense_list_shows_items_by_age_with_the_report(app, acme, site, owner_engine):
    tenant, coffee, channel = acme
    _mapping(app, tenant, channel)
    _, differs_ref = _pay(app, tenant, coffee, 2_000)
    missing, _ = _pay(app, tenant, coffee, 3_000)
    unknown = [(f"ch_unknown_{n:02}", f"{n + 1}.00", "charge") for n in range(25)]
    _imported(app, tenant, channel, _csv((differs_ref, "19.50", "charge"), *unknown))
    items = {(i.kind, i.amount): i for i in _items(owner_engine)}
    short, mismatch = items[("short", 3_000)], items[("mismatch", 50)]
    with owner_engine.begin() as conn:  # the short item is 40 days old, the mismatch 10
        for item, days in ((short, 40), (mismatch, 10)):
            conn.execute(
                sa.update(SuspenseItem)
                .where(SuspenseItem.id == item.id)
                .values(opened_at=datetime.now(UTC) - timedelta(days=days))
            )
    operator = _signed_in(site, tenant, OPERATOR)
    html = body(operator.get("/console/suspense"))
    assert _rows(html, "age-report", "age-bucket") == [
        ["USD", "0–7 days", "25", "325.00 USD"],
        ["USD", "8–30 days", "1", "0.50 USD"],
        ["USD", "31–90 days", "1", "30.00 USD"],
    ]
    rows = _rows(html, "suspense-list", "suspense-item")
    assert len(rows) == 25
    assert rows[0][1:7] == ["40", "platform only possible loss", "platform only: +30.00 USD", "Sandbox", "open", "—"]
    assert rows[0][7] == f"payment {missing} (30.00 USD) is not on the statement"
    assert rows[1][1:4] == ["10", "amounts differ", "statement 0.50 USD less than the platform"]
    assert {tuple(r[1:3]) for r in rows[2:]} == {("0", "statement only")}
    assert html.count('<strong class="possible-loss">possible loss</strong>') == 1
    assert f'href="/console/suspense/{short.id}"' in html
    newer = _link(html, "Newer →")
    rest = _rows(body(operator.get(newer)), "suspense-list", "suspense-item")
    # The 25 statement-only items were opened together: every one is listed once, over the two pages.
    assert sorted(r[3] for r in rows[2:] + rest) == sorted(f"statement only: +{n}.00 USD" for n in range(1, 26))
    assert len(rest) == 2 and _link(body(operator.get(newer)), "Newer →") is None

    html = body(operator.get("/console/suspense?kind=short"))
    assert [r[3] for r in _rows(html, "suspense-list", "suspense-item")] == ["platform only: +30.00 USD"]
    html = body(operator.get("/console/suspense?currency=eur"))
    assert "No suspense items match." in html
    html = body(operator.get("/console/suspense?currency=EURO&kind=odd&status=lost"))
    assert "is not an ISO 4217 currency code" in _error(html, "currency")
    assert _error(html, "kind") == "'odd' is not a kind of suspense item."
    assert _error(html, "status") == "'lost' is not a suspense status."
    assert 'value="EURO"' in html and len(_rows(html, "suspense-list", "suspense-item")) == 25

    # Assigned items, mine and resolved ones.
    with app.app_context(), tenant_context(db.session, tenant.id):
        suspense.assign(tenant.id, mismatch.id, OPERATOR, SYSTEM)
        suspense.assign(tenant.id, short.id, FINANCE, SYSTEM)
        suspense.resolve_by_adjustment(tenant.id, items[("long", -100)].id, "channel_fees", "fee", SYSTEM)
        db.session.commit()
        db.session.remove()
    html = body(operator.get("/console/suspense?mine=1"))
    assert [r[3] for r in _rows(html, "suspense-list", "suspense-item")] == [
        "statement 0.50 USD less than the platform"
    ]
    html = body(operator.get(f"/console/suspense?assignee={FINANCE.upper()}"))
    assert [r[6] for r in _rows(html, "suspense-list", "suspense-item")] == [FINANCE]
    html = body(operator.get("/console/suspense?status=resolved"))
    assert [r[3:6] for r in _rows(html, "suspense-list", "suspense-item")] == [
        ["statement only: +1.00 USD", "Sandbox", "resolved"]
    ]
    assert len(_rows(body(operator.get("/console/suspense")), "suspense-list", "suspense-item")) == 25
    assert "0–7 days" in html and "24" in _rows(html, "age-report", "age-bucket")[0]


def test_an_item_is_assigned_commented_matched_and_adjusted(app, acme, site, owner_engine):
    tenant, coffee, channel = acme
    _mapping(app, tenant, channel)
    missing, _ = _pay(app, tenant, coffee, 3_000)
    import_id = _imported(app, tenant, channel, _csv(("ch_unknown", "7.00", "charge")))
    long, short = _items(owner_engine)
    assert (long.kind, short.kind, _suspense_balance(app, tenant)) == ("long", "short", -700 + 3_000)
    finance = _signed_in(site, tenant, FINANCE)
    page = f"/console/suspense/{long.id}"

    html = body(finance.get(page))
    facts = _facts(html, "item-facts")
    assert facts.startswith("Amount statement only: +7.00 USD Status open Source Sandbox Mode test")
    assert "Assignee nobody" in facts and "Record none on the platform" in facts
    assert _rows(html, "item-line", "line") == [["setup.csv", "2", _today(), "ch_unknown", "payment", "7.00 USD", "—"]]
    assert f'href="/console/reconciliation/imports/{import_id}"' in html
    assert "No comments yet." in html and 'id="approve-form"' not in html

    def post(action, data, **kwargs):
        return finance.submit(f"{page}/{action}" if action else page, data, page, **kwargs)

    response = post("assign", {"assignee": "boris"})
    assert response.status_code == 422
    html = body(response)
    assert _error(html, "assignee") == "Assign the item to a person's e-mail address."
    assert 'name="assignee" type="email" value="boris"' in html
    html = body(post("assign", {"assignee": CONTROLLER.upper()}, follow_redirects=True))
    assert f"Assigned to {CONTROLLER}." in html and f"Assignee {CONTROLLER}" in _facts(html, "item-facts")

    response = post("comments", {"body": "   "})
    assert response.status_code == 422
    assert _error(body(response), "body") == "Write a comment of at most 2,000 characters."
    html = body(post("comments", {"body": "Asked the channel about ch_unknown"}, follow_redirects=True))
    assert "Comment added." in html
    comment = re.search(r'<div class="comment">(.*?)</div>', html, re.S).group(1)
    assert _text(comment).startswith(FINANCE) and _text(comment).endswith("Asked the channel about ch_unknown")

    # An adjustment: the reason is required, the account chosen is kept.
    response = post("adjust", {"purpose": "channel_fees", "adjust_note": ""})
    assert response.status_code == 422
    html = body(response)
    assert _error(html, "adjust_note").startswith("Give the reason (at most 1,000 characters)")
    assert '<option selected value="channel_fees">' in html
    response = post("adjust", {"purpose": "", "adjust_note": "the channel's fee"})
    assert response.status_code == 422
    html = body(response)
    assert _error(html, "purpose").startswith("Choose the account: channel_receivable")
    assert 'name="adjust_note" type="text" value="the channel&#39;s fee"' in html
    response = post("adjust", {"purpose": "merchant_available", "adjust_note": "x"})
    assert response.status_code == 422 and _error(body(response), "purpose") == "Not a valid choice."
    assert _item(owner_engine, long.id).status == "open"
    html = body(post("adjust", {"purpose": "channel_fees", "adjust_note": "the channel's fee"}, follow_redirects=True))
    assert "Resolved by an adjusting entry to Channel fees; suspense is cleared." in html
    assert "Resolution adjusted by finance@acme.example.com" in _facts(html, "item-facts")
    assert 'id="adjust-form"' not in html and 'id="comment-form"' in html
    stored = _item(owner_engine, long.id)
    assert (stored.status, stored.resolution, stored.resolved_by, stored.assignee) == (
        "resolved",
        "adjusted",
        FINANCE,
        CONTROLLER,
    )
    # A resolved item takes no further step: refused above the forms.
    response = post("assign", {"assignee": FINANCE})
    assert response.status_code == 422 and _refused(body(response)) == ["This item is already resolved."]
    audit = body(finance.get(page)).split('id="item-audit"')[1]
    assert re.findall(r"<td>(suspense\.[a-z_]+)</td>", audit) == [
        "suspense.assigned",
        "suspense.commented",
        "suspense.adjusted",
    ]
    assert f"<td>{FINANCE}</td>" in audit

    # The platform-only payment is matched to its record (after a wrong id is refused at its field).
    page = f"/console/suspense/{short.id}"
    html = body(finance.get(page))
    assert 'id="possible-loss"' in html and "Amount platform only: +30.00 USD" in _facts(html, "item-facts")
    response = post("match", {"record_type": "payment", "record_id": "pi_nothing", "match_note": "arrived late"})
    assert response.status_code == 422
    html = body(response)
    assert _error(html, "record_id") == "No payment pi_nothing of this tenant."
    assert 'name="record_id" type="text" value="pi_nothing"' in html
    assert 'name="match_note" type="text" value="arrived late"' in html
    html = body(
        post(
            "match",
            {"record_type": "payment", "record_id": missing, "match_note": "arrived late"},
            follow_redirects=True,
        )
    )
    assert f"Resolved: the item is payment {missing}, already in the books; suspense is cleared." in html
    assert _item(owner_engine, short.id).resolution == "matched"
    assert _suspense_balance(app, tenant) == 0


def test_a_write_off_needs_a_second_person(app, acme, site, owner_engine):
    tenant, coffee, channel = acme
    _mapping(app, tenant, channel)
    _imported(app, tenant, channel, _csv(("ch_a", "3.00", "charge"), ("ch_b", "4.00", "charge")))
    first, second = _items(owner_engine)[::-1]  # 3.00 and 4.00 on the statement only
    finance = _signed_in(site, tenant, FINANCE)
    page = f"/console/suspense/{first.id}"

    response = finance.submit(f"{page}/write-off", {"write_off_note": ""}, page)
    assert response.status_code == 422
    assert _error(body(response), "write_off_note").startswith("Give the reason")
    html = body(
        finance.submit(f"{page}/write-off", {"write_off_note": "too small to chase"}, page, follow_redirects=True)
    )
    assert "Write-off requested: someone other than you approves or rejects it." in html
    assert f"{FINANCE} asked to write this item off: too small to chase" in _text(html)
    assert 'id="approve-form"' not in html and "You asked for it: someone else approves it." in html
    assert 'id="write-off-form"' not in html and 'id="reject-form"' in html
    assert _item(owner_engine, first.id).status == "pending_write_off"
    # The requester cannot approve it, even by posting the form.
    response = finance.submit(f"{page}/write-off/approve", {}, page)
    assert response.status_code == 422
    assert _refused(body(response)) == [
        "A write-off needs a second person: someone other than who asked for it approves it."
    ]
    assert _item(owner_engine, first.id).status == "pending_write_off"

    controller = _signed_in(site, tenant, CONTROLLER)
    html = body(controller.get(page))
    assert 'id="approve-form"' in html and "You asked for it" not in html
    html = body(controller.submit(f"{page}/write-off/approve", {}, page, follow_redirects=True))
    assert f"Written off (statement only: +3.00 USD), as {FINANCE} asked." in html
    stored = _item(owner_engine, first.id)
    assert (stored.status, stored.resolution, stored.requested_by, stored.resolved_by) == (
        "written_off",
        "written_off",
        FINANCE,
        CONTROLLER,
    )
    assert "Status written off" in _facts(html, "item-facts")

    # A rejected request: the reason is required; the item is open again.
    page = f"/console/suspense/{second.id}"
    controller.submit(f"{page}/write-off", {"write_off_note": "unknown money"}, page)
    response = finance.submit(f"{page}/write-off/reject", {"reject_note": ""}, page)
    assert response.status_code == 422 and _error(body(response), "reject_note").startswith("Give the reason")
    assert _item(owner_engine, second.id).status == "pending_write_off"
    html = body(
        finance.submit(f"{page}/write-off/reject", {"reject_note": "ask the bank first"}, page, follow_redirects=True)
    )
    assert "Write-off rejected: the item is open again." in html and 'id="write-off-form"' in html
    assert _item(owner_engine, second.id).status == "open"
    assert _actions(owner_engine, "suspense.") == [
        ("suspense.write_off_requested", FINANCE),
        ("suspense.written_off", CONTROLLER),
        ("suspense.write_off_requested", CONTROLLER),
        ("suspense.write_off_rejected", FINANCE),
    ]
    assert _suspense_balance(app, tenant) == -400


# --- who may do what -----------------------------------------------------------------------


def _every_post(item_id) -> list[tuple[str, dict]]:
    item = f"/console/suspense/{item_id}"
    return [
        ("/console/reconciliation/fetch", {"day": _today()}),
        ("/console/reconciliation/mappings", {"source": "bank", **{f"bank-{k}": v for k, v in MAPPING.items()}}),
        (f"{item}/assign", {"assignee": OPERATOR}),
        (f"{item}/comments", {"body": "mine now"}),
        (f"{item}/match", {"record_type": "payment", "record_id": "pi_x", "match_note": "x"}),
        (f"{item}/adjust", {"purpose": "bank", "adjust_note": "x"}),
        (f"{item}/write-off", {"write_off_note": "x"}),
        (f"{item}/write-off/approve", {}),
        (f"{item}/write-off/reject", {"reject_note": "x"}),
    ]


def test_an_operator_reads_everything_and_changes_nothing(app, acme, site, owner_engine):
    tenant, _, channel = acme
    _mapping(app, tenant, channel)
    import_id = _imported(app, tenant, channel, _csv(("ch_a", "3.00", "charge")))
    [item] = _items(owner_engine)
    operator = _signed_in(site, tenant, OPERATOR)
    html = body(operator.get("/console/reconciliation"))
    assert "Admins and finance upload statements." in html
    assert 'id="upload-form"' not in html and 'id="fetch-form"' not in html
    assert 'href="/console/suspense"' in html
    html = body(operator.get("/console/reconciliation/mappings"))
    assert "<form" not in html.split("<main")[1] and "Admins and finance save the mappings." in html
    assert "Reference column ref" in _text(html)
    assert operator.get(f"/console/reconciliation/imports/{import_id}").status_code == 200
    html = body(operator.get(f"/console/suspense/{item.id}"))
    assert "Admins and finance work on suspense items." in html and 'id="assign-form"' not in html
    assert 'id="comment-form"' not in html

    before = (_imports(owner_engine), _items(owner_engine), _mappings(owner_engine))
    response = _upload(operator, _csv(("ch_b", "4.00", "charge")), source=channel)
    assert response.status_code == 403 and FORBIDDEN in body(response)
    for path, data in _every_post(item.id):
        response = operator.submit(path, data, "/console/reconciliation")
        assert response.status_code == 403, path
        assert FORBIDDEN in body(response)
    assert (_imports(owner_engine), _items(owner_engine), _mappings(owner_engine)) == before


def test_merchant_users_have_no_reconciliation_pages(app, acme, site, owner_engine):
    tenant, _, channel = acme
    _mapping(app, tenant, channel)
    import_id = _imported(app, tenant, channel, _csv(("ch_a", "3.00", "charge")))
    [item] = _items(owner_engine)
    for email in (OWNER, STAFF):
        client = _signed_in(site, tenant, email)
        for path in (
            "/console/reconciliation",
            "/console/reconciliation/mappings",
            f"/console/reconciliation/imports/{import_id}",
            "/console/suspense",
            f"/console/suspense/{item.id}",
        ):
            response = client.get(path)
            assert response.status_code == 403 and FORBIDDEN in body(response), path
        for path, data in _every_post(item.id):
            response = client.submit(path, data, "/merchant/")
            assert response.status_code == 403, path
    assert _item(owner_engine, item.id).status == "open" and _item(owner_engine, item.id).assignee is None


def test_another_tenants_import_and_item_are_not_found(app, acme, make, site, owner_engine):
    tenant, _, channel = acme
    other = make.tenant("other")
    their_channel = make.channel_account(other.id, "Theirs")
    _mapping(app, other, their_channel)
    their_import = _imported(app, other, their_channel, _csv(("ch_theirs", "9.00", "charge")))
    [their_item] = _items(owner_engine)
    _mapping(app, tenant, channel)
    _imported(app, tenant, channel, _csv(("ch_ours", "1.00", "charge")))

    finance = _signed_in(site, tenant, FINANCE)
    for path in (f"/console/reconciliation/imports/{their_import}", f"/console/suspense/{their_item.id}"):
        for target in (path, path.rsplit("/", 1)[0] + f"/{uuid.uuid4()}"):
            response = finance.get(target)
            assert response.status_code == 404 and "Page not found" in body(response), target
    for path, data in _every_post(their_item.id)[2:]:
        response = finance.submit(path, data, "/console/suspense")
        assert response.status_code == 404, path
    # Their channel account is no source here: not for an upload, a fetch or a mapping.
    response = _upload(finance, _csv(("ch_x", "1.00", "charge")), source=their_channel)
    assert response.status_code == 422 and _error(body(response), "source") == "Not a valid choice."
    response = finance.submit(
        "/console/reconciliation/fetch", {"channel_account_id": str(their_channel), "day": _today()}, "/console/"
    )
    assert response.status_code == 422 and _error(body(response), "channel_account_id") == "Not a valid choice."
    response = _save_mapping(finance, their_channel, reference="changed")
    assert response.status_code == 404
    html = body(finance.get("/console/suspense?status=all"))
    assert "ch_theirs" not in html and "9.00" not in html
    assert "Theirs" not in body(finance.get("/console/reconciliation"))
    stored = _item(owner_engine, their_item.id)
    assert (stored.status, stored.assignee) == ("open", None)
    with owner_engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(StatementMapping.mapping).where(StatementMapping.channel_account_id == their_channel)
            ).scalar_one()["reference"]
            == "ref"
        )
    # Control: their own staff open them.
    theirs = _signed_in(site, other, other.admin_email)
    assert theirs.get(f"/console/reconciliation/imports/{their_import}").status_code == 200
    assert theirs.get(f"/console/suspense/{their_item.id}").status_code == 200
