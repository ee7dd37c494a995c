"""Payout pages: a merchant's owner sets the bank account and requests and cancels payouts (held
at once); the merchant's other users read them. The tenant console creates bank batches as a
clearing run and follows it, lists the batches, downloads their files (CSV, pain.001), imports
the bank's result file (all or nothing, once), keeps the account payouts are sent from, and shows
a merchant's bank account (masked)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from html import unescape
from xml.etree import ElementTree as etree  # noqa: N813  (our own file, parsed in a test)
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from pages import body
from pages import signed_in as _signed_in
from pages import table as _table
from pages import text as _text

from clearing import payouts as clearing_payouts
from clearing.models import ClearingRun, ClearingSettings, MerchantBankAccount, PayoutBatch, PayoutResultFile
from core.db import db
from payments import balance_operations, refunds
from payments.intents import MerchantContext
from payments.models import Payout
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import AuditEvent, Tenant

FORBIDDEN = "Your account is not allowed to open this page."
OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
OWNER = "owner@coffee.example.com"
STAFF = "staff@coffee.example.com"
TEA_OWNER = "owner@tea.example.com"
SYSTEM = Actor.system()
PAIN = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"
COFFEE_IBAN = "DE89 3704 0044 0532 0130 00"
COFFEE_ACCOUNT = {
    "holder_name": "Coffee GmbH",
    "account": COFFEE_IBAN,
    "bank_code": "COBADEFFXXX",
    "bank_name": "Commerzbank",
    "country": "",
}
DEBTOR = {"debtor_name": "Acme Pay", "debtor_iban": "FR14 2004 1010 0505 0001 3M02 606", "debtor_bic": "PSSTFRPPPAR"}
ZONE = "Asia/Shanghai"


@pytest.fixture
def acme(app, make, owner_engine):
    """A tenant in Shanghai's time zone with staff of every role, two merchants with 1,000.00 EUR
    available each (test mode), and a staff user of Coffee."""
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    coffee = make.merchant(tenant, "Coffee", OWNER)
    tea = make.merchant(tenant, "Tea", TEA_OWNER)
    make.user(tenant, STAFF, "staff", merchant_id=coffee)
    with owner_engine.begin() as conn:
        conn.execute(sa.update(Tenant).where(Tenant.id == tenant.id).values(time_zone=ZONE))
    for merchant in (coffee, tea):
        _topup(app, tenant, merchant, 100_000)
    return tenant, coffee, tea


# --- helpers -------------------------------------------------------------------------------


def _topup(app, tenant, merchant, amount):
    with app.app_context(), tenant_context(db.session, tenant.id):
        balance_operations.create_topup(MerchantContext(tenant.id, merchant, False), amount=amount, currency="eur")
        db.session.remove()


def _payout(app, tenant, merchant, amount) -> str:
    """A payout requested through the use case (as the API does)."""
    with app.app_context(), tenant_context(db.session, tenant.id):
        payout_id = balance_operations.create_payout(
            MerchantContext(tenant.id, merchant, False), amount=amount, currency="eur"
        ).id
        db.session.remove()
        return payout_id


def _account(app, tenant, merchant, holder, iban):
    with app.app_context(), tenant_context(db.session, tenant.id):
        clearing_payouts.set_bank_account(tenant.id, merchant, holder_name=holder, account=iban, actor=SYSTEM)
        db.session.commit()
        db.session.remove()


def _batched(app, tenant) -> dict:
    """A payout batch run done at once (the worker's part is tested through the page)."""
    with app.app_context(), tenant_context(db.session, tenant.id):
        run = ClearingRun(tenant_id=tenant.id, kind="payout_batch")
        db.session.add(run)
        db.session.commit()
        outcome = clearing_payouts.create_batches(tenant.id, run, FINANCE)
        run.status, run.started_at, run.finished_at = (
            "succeeded",
            run.created_at,
            run.created_at,
        )  # as the job leaves it
        db.session.commit()
        db.session.remove()
        return outcome


def _available(app, tenant, merchant) -> int:
    with app.app_context(), tenant_context(db.session, tenant.id):
        balance = refunds.balance(MerchantContext(tenant.id, merchant, False))
        db.session.remove()
    return {item["currency"]: item["amount"] for item in balance["available"]}.get("eur", 0)


def _rows(html: str, table_id: str, row_class: str) -> list[list[str]]:
    rows = re.findall(rf'<tr class="{row_class}">(.*?)</tr>', _table(html, table_id), re.S)
    return [[_text(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)] for row in rows]


def _error(html: str, field: str) -> str:
    match = re.search(rf'<p id="{field}-error" class="error">([^<]*)</p>', html)
    assert match, f"no error at the field {field}"
    return unescape(match.group(1))


def _facts(html: str, dl_id: str) -> str:
    match = re.search(rf'<dl class="facts" id="{dl_id}">(.*?)</dl>', html, re.S)
    assert match, f"no facts {dl_id} on the page"
    return _text(match.group(1))


def _local(at) -> str:
    return at.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")


def _older_link(html: str) -> str | None:
    match = re.search(r'<a href="([^"]+)">Older →</a>', html)
    return unescape(match.group(1)) if match else None


def _payouts(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(Payout.__table__).order_by(Payout.created_at, Payout.id)).all()


def _bank_accounts(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(MerchantBankAccount.__table__)).all()


def _batches(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(PayoutBatch.__table__).order_by(PayoutBatch.created_at)).all()


def _runs(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(ClearingRun.__table__).order_by(ClearingRun.created_at)).all()


def _result_files(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(PayoutResultFile.__table__)).all()


def _debtor(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.select(ClearingSettings.debtor_name, ClearingSettings.debtor_iban_encrypted, ClearingSettings.debtor_bic)
        ).all()


def _actions(owner_engine, prefix: str) -> list[tuple[str, str]]:
    with owner_engine.connect() as conn:
        return conn.execute(
            sa.select(AuditEvent.action, AuditEvent.actor_email)
            .where(AuditEvent.action.like(f"{prefix}%"))
            .order_by(AuditEvent.created_at)
        ).all()


def _request(client, amount: str, currency: str = "EUR", description: str = "", **kwargs):
    return client.submit(
        "/merchant/payouts",
        {"amount": amount, "currency": currency, "description": description},
        form_page="/merchant/payouts",
        **kwargs,
    )


def _results(*lines: str) -> bytes:
    return ("payout_id,status,reason\n" + "".join(f"{line}\n" for line in lines)).encode()


def _upload(client, data: bytes | None, name: str = "results.csv", **kwargs):
    """POST a result file as a browser does. (The body is built here: for a body this large the test
    client would spool it to a temporary file that nobody closes.)"""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'.encode()]
    parts.append(client.csrf_token("/console/payouts").encode() + b"\r\n")
    if data is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: text/csv\r\n\r\n".encode()
        )
        parts.append(data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return client.post(
        "/console/payouts/results",
        data=b"".join(parts),
        content_type=f"multipart/form-data; boundary={boundary}",
        **kwargs,
    )


# --- the merchant's bank account -----------------------------------------------------------


def test_the_owner_sets_the_bank_account_and_every_merchant_user_reads_it(acme, site, owner_engine):
    tenant, _, _ = acme
    owner = _signed_in(site, tenant, OWNER)
    html = body(owner.get("/merchant/bank-account"))
    assert "No bank account yet: payouts wait until a bank account is set." in html
    assert 'id="bank-account-form"' in html

    typed = {**COFFEE_ACCOUNT, "account": "DE89 3704 0044 0532 0130 01"}  # one digit off
    response = owner.submit("/merchant/bank-account", typed)
    assert response.status_code == 422
    html = body(response)
    assert _error(html, "account") == "That IBAN is not valid (check the digits)."
    for name, value in typed.items():
        assert f'name="{name}" type="text" value="{value}"' in html, name
    response = owner.submit(
        "/merchant/bank-account",
        {"holder_name": "Coffee Inc", "account": "12345678", "bank_code": "", "bank_name": "", "country": "US"},
    )
    assert response.status_code == 422
    assert "An account number needs its bank code" in _error(body(response), "bank_code")
    response = owner.submit("/merchant/bank-account", {**COFFEE_ACCOUNT, "holder_name": " "})
    assert response.status_code == 422 and "account holder's name" in _error(body(response), "holder_name")
    assert _bank_accounts(owner_engine) == []

    html = body(owner.submit("/merchant/bank-account", COFFEE_ACCOUNT, follow_redirects=True))
    assert "Bank account saved: payouts not yet sent to the bank go to Coffee GmbH, account …3000." in html
    facts = _facts(html, "bank-account")
    assert "Holder Coffee GmbH IBAN …3000 BIC COBADEFFXXX Bank Commerzbank Country DE" in facts
    assert "DE89370400440532013000" not in html and COFFEE_IBAN not in html
    assert 'name="account" type="text" value=""' in html  # never put back into the form
    assert 'name="holder_name" type="text" value="Coffee GmbH"' in html
    [row] = _bank_accounts(owner_engine)
    assert (row.holder_name, row.kind, row.account_last4, row.bank_code, row.country) == (
        "Coffee GmbH",
        "iban",
        "3000",
        "COBADEFFXXX",
        "DE",
    )
    assert "DE89370400440532013000" not in row.account_encrypted
    assert _actions(owner_engine, "merchant.bank_account") == [("merchant.bank_account_set", OWNER)]

    staff = _signed_in(site, tenant, STAFF)
    html = body(staff.get("/merchant/bank-account"))
    assert "Holder Coffee GmbH IBAN …3000" in _facts(html, "bank-account")
    assert 'id="bank-account-form"' not in html and "The owner of the account sets the bank account." in html
    response = staff.submit(
        "/merchant/bank-account", {**COFFEE_ACCOUNT, "holder_name": "Staff"}, form_page="/merchant/bank-account"
    )
    assert response.status_code == 403 and FORBIDDEN in body(response)
    assert [r.holder_name for r in _bank_accounts(owner_engine)] == ["Coffee GmbH"]


# --- the merchant's payouts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "field", "message"),
    [
        ("", "EUR", "amount", "Give the amount to pay out, for example 250.00."),
        ("abc", "EUR", "amount", "'abc' is not an amount."),
        ("12.345", "EUR", "amount", "EUR amounts have at most 2 decimals."),
        ("-5", "EUR", "amount", "The amount must be more than zero."),
        ("10", "EURO", "currency", "'EURO' is not an ISO 4217 currency code"),
        ("10", "", "currency", "Give the currency, for example EUR."),
        (
            "1000.01",
            "EUR",
            "amount",
            "That is more than your available balance: 1,000.00 EUR is available in test mode. Nothing was held.",
        ),
        ("5", "usd", "amount", "0.00 USD is available in test mode. Nothing was held."),
    ],
)
def test_a_bad_payout_request_is_explained_at_its_field_and_holds_nothing(
    app, acme, site, owner_engine, amount, currency, field, message
):
    tenant, coffee, _ = acme
    owner = _signed_in(site, tenant, OWNER)
    response = _request(owner, amount, currency, "March payout")
    assert response.status_code == 422
    html = body(response)
    assert message in _error(html, field)
    assert f'name="amount" type="text" value="{amount}"' in html
    assert f'name="currency" type="text" value="{currency}"' in html
    assert 'name="description" type="text" value="March payout"' in html
    assert "requested: the amount is held" not in html
    assert _payouts(owner_engine) == [] and _available(app, tenant, coffee) == 100_000
    assert _rows(html, "payout-balances", "balance") == [["EUR", "1,000.00 EUR", "0.00 EUR", "0.00 EUR"]]


def test_the_owner_requests_payouts_and_cancels_a_pending_one(app, acme, site, owner_engine):
    tenant, coffee, _ = acme
    owner = _signed_in(site, tenant, OWNER)
    html = body(owner.get("/merchant/payouts"))
    assert _rows(html, "payout-balances", "balance") == [["EUR", "1,000.00 EUR", "0.00 EUR", "0.00 EUR"]]
    assert "payouts wait until a bank account is set" in html
    assert 'name="currency" type="text" value="EUR"' in html  # the balance's currency, ready
    assert "No payouts match." in html
    assert 'href="/merchant/payouts"' in html  # the nav link

    html = body(_request(owner, "250.00", "eur", "March", follow_redirects=True))
    [first] = _payouts(owner_engine)
    assert first.id.startswith("po_") and (first.amount, first.currency, first.status) == (25_000, "EUR", "pending")
    assert f"Payout {first.id} of 250.00 EUR requested: the amount is held from your available balance at once" in html
    assert "It waits until you set a bank account." in html
    assert _available(app, tenant, coffee) == 75_000
    assert _rows(html, "payout-balances", "balance") == [["EUR", "750.00 EUR", "250.00 EUR", "0.00 EUR"]]
    assert _rows(html, "payout-list", "payout") == [
        [f"{first.id} March", "250.00 EUR", "pending", "—", _local(first.created_at), "—", "—",
         f"Cancel payout {first.id}"],
    ]  # fmt: skip
    assert f"Created ({ZONE})" in html

    html = body(_request(owner, "100", "EUR", follow_redirects=True))
    second = _payouts(owner_engine)[1]
    assert [row[0] for row in _rows(html, "payout-list", "payout")] == [second.id, f"{first.id} March"]  # newest first

    html = body(
        owner.submit(f"/merchant/payouts/{first.id}/cancel", form_page="/merchant/payouts", follow_redirects=True)
    )
    assert f"Payout {first.id} is canceled: 250.00 EUR is back in your available balance." in html
    assert [(p.id, p.status) for p in _payouts(owner_engine)] == [(first.id, "canceled"), (second.id, "pending")]
    assert _available(app, tenant, coffee) == 90_000
    assert _rows(html, "payout-balances", "balance") == [["EUR", "900.00 EUR", "100.00 EUR", "0.00 EUR"]]
    assert f"/merchant/payouts/{first.id}/cancel" not in html and f"/merchant/payouts/{second.id}/cancel" in html

    html = body(
        owner.submit(f"/merchant/payouts/{first.id}/cancel", form_page="/merchant/payouts", follow_redirects=True)
    )
    assert f"The payout {first.id} was not canceled: This payout has a status of canceled" in html
    assert _available(app, tenant, coffee) == 90_000
    assert _actions(owner_engine, "payout.") == [
        ("payout.requested", OWNER),
        ("payout.requested", OWNER),
        ("payout.canceled", OWNER),
    ]


def test_the_payout_list_filters_by_status_and_mode_and_pages(app, acme, site):
    tenant, coffee, tea = acme
    made = [_payout(app, tenant, coffee, 100 + n) for n in range(27)]
    with app.app_context(), tenant_context(db.session, tenant.id):
        balance_operations.cancel_payout(MerchantContext(tenant.id, coffee, False), made[5])
        db.session.remove()
    theirs = _payout(app, tenant, tea, 999)
    client = _signed_in(site, tenant, STAFF)

    html = body(client.get("/merchant/payouts"))
    ids = [row[0] for row in _rows(html, "payout-list", "payout")]
    assert ids == made[::-1][:25] and theirs not in html
    html = body(client.get(_older_link(html)))
    assert [row[0] for row in _rows(html, "payout-list", "payout")] == made[1::-1] and _older_link(html) is None

    html = body(client.get("/merchant/payouts?status=pending"))
    assert [row[0] for row in _rows(html, "payout-list", "payout")] == [p for p in made[::-1] if p != made[5]][:25]
    older = _older_link(html)
    assert "status=pending" in older and "mode=test" in older
    assert [row[0] for row in _rows(body(client.get(older)), "payout-list", "payout")] == [made[0]]

    html = body(client.get("/merchant/payouts?status=canceled"))
    assert _rows(html, "payout-list", "payout")[0][:3] == [made[5], "1.05 EUR", "canceled"]
    assert len(_rows(html, "payout-list", "payout")) == 1

    html = body(client.get("/merchant/payouts?status=lost"))
    assert _error(html, "status") == "'lost' is not a payout status."
    assert "the list below ignores them" in html and len(_rows(html, "payout-list", "payout")) == 25

    live = body(client.get("/merchant/payouts?mode=live"))
    assert "No payouts match." in live and "No live mode balance yet." in live


def test_other_merchant_users_read_payouts_but_cannot_request_or_cancel(app, acme, site, owner_engine):
    tenant, coffee, tea = acme
    payout_id = _payout(app, tenant, coffee, 5_000)
    staff = _signed_in(site, tenant, STAFF)
    html = body(staff.get("/merchant/payouts"))
    assert payout_id in html and 'id="payout-form"' not in html and "/cancel" not in html
    assert "The owner of the account requests and cancels payouts." in html
    for path, data in [
        ("/merchant/payouts", {"amount": "10", "currency": "EUR"}),
        (f"/merchant/payouts/{payout_id}/cancel", {}),
    ]:
        response = staff.submit(path, data, form_page="/merchant/payouts")
        assert response.status_code == 403, path
        assert FORBIDDEN in body(response)
    assert [(p.id, p.status) for p in _payouts(owner_engine)] == [(payout_id, "pending")]
    assert _available(app, tenant, coffee) == 95_000

    # Another merchant's payout does not exist for Coffee's owner.
    theirs = _payout(app, tenant, tea, 1_000)
    owner = _signed_in(site, tenant, OWNER)
    response = owner.submit(f"/merchant/payouts/{theirs}/cancel", form_page="/merchant/payouts")
    assert response.status_code == 404 and "Page not found" in body(response)
    assert theirs not in body(owner.get("/merchant/payouts"))
    assert {p.id: p.status for p in _payouts(owner_engine)}[theirs] == "pending"

    # Tenant staff have no merchant dashboard; merchant users have no console.
    for email in (tenant.admin_email, FINANCE):
        response = _signed_in(site, tenant, email).get("/merchant/payouts")
        assert response.status_code == 403 and FORBIDDEN in body(response)
    response = owner.get("/console/payouts")
    assert response.status_code == 403 and FORBIDDEN in body(response)
    response = owner.submit("/console/payouts/batches", form_page="/merchant/payouts")
    assert response.status_code == 403 and _runs(owner_engine) == []


# --- the console: batches and their files --------------------------------------------------


def test_finance_creates_bank_batches_and_downloads_their_files(app, acme, site, owner_engine, run_jobs):
    tenant, coffee, tea = acme
    owner = _signed_in(site, tenant, OWNER)
    assert owner.submit("/merchant/bank-account", COFFEE_ACCOUNT).status_code == 302
    assert _request(owner, "300.00").status_code == 302
    assert _request(owner, "200.00").status_code == 302
    first, second = (p.id for p in _payouts(owner_engine))
    waiting = _payout(app, tenant, tea, 10_000)  # Tea has no bank account

    finance = _signed_in(site, tenant, FINANCE)
    html = body(finance.get("/console/payouts"))
    assert _rows(html, "pending-list", "pending") == [["EUR", "test", "3", "600.00 EUR", "1"]]
    assert "No batch runs yet." in html and "No batches yet." in html
    assert '<meta http-equiv="refresh"' not in html
    assert 'href="/console/payouts"' in html  # the nav link

    html = body(finance.submit("/console/payouts/batches", form_page="/console/payouts", follow_redirects=True))
    assert "Batch run started: this page follows its progress." in html
    assert '<meta http-equiv="refresh" content="3">' in html
    run_rows = re.findall(r'<tr class="run run-[a-z]+">(.*?)</tr>', _table(html, "run-list"), re.S)
    assert len(run_rows) == 1 and _text(run_rows[0]).startswith(f"queued {FINANCE}")
    # A second click while the run is queued starts nothing.
    html = body(finance.submit("/console/payouts/batches", form_page="/console/payouts", follow_redirects=True))
    assert "A batch run is already in progress" in html and "Batch run started" not in html
    assert [(r.kind, r.status, r.requested_by) for r in _runs(owner_engine)] == [("payout_batch", "queued", FINANCE)]

    assert run_jobs() >= 1
    html = body(finance.get("/console/payouts"))
    assert '<meta http-equiv="refresh"' not in html
    [batch] = _batches(owner_engine)
    run_row = re.search(r'<tr class="run run-succeeded">(.*?)</tr>', html, re.S).group(1)
    assert '<progress value="1" max="1">' in run_row
    assert f"1 batches, 2 payouts; 1 waiting for a bank account {batch.reference}: 2 · 500.00 EUR (test)" in _text(
        run_row
    )
    assert _rows(html, "batch-list", "batch") == [
        [batch.reference, "EUR", "test", "2", "500.00 EUR", "0", "0", _local(batch.created_at), "CSV · pain.001"]
    ]
    assert _rows(html, "pending-list", "pending") == [["EUR", "test", "1", "100.00 EUR", "1"]]
    assert {p.id: p.status for p in _payouts(owner_engine)} == {
        first: "in_transit",
        second: "in_transit",
        waiting: "pending",
    }
    # Nothing more can be sent: no new run.
    html = body(finance.submit("/console/payouts/batches", form_page="/console/payouts", follow_redirects=True))
    assert "Nothing to send: no merchant with a bank account has a pending payout." in html
    assert len(_runs(owner_engine)) == 1

    html = body(finance.get(f"/console/payouts/batches/{batch.id}"))
    assert f"Batch {batch.reference}" in html
    assert _rows(html, "batch-payouts", "batch-payout") == [
        [first, "Coffee", "Coffee GmbH", "…3000", "300.00 EUR", "in_transit", "—"],
        [second, "Coffee", "Coffee GmbH", "…3000", "200.00 EUR", "in_transit", "—"],
    ]
    assert "DE89370400440532013000" not in html
    assert f'href="/console/payouts/batches/{batch.id}/file.csv"' in html

    response = finance.get(f"/console/payouts/batches/{batch.id}/file.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{batch.reference}.csv"'
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [(r["payout_id"], r["holder_name"], r["account"], r["currency"], r["amount"]) for r in rows] == [
        (first, "Coffee GmbH", "DE89370400440532013000", "EUR", "300.00"),
        (second, "Coffee GmbH", "DE89370400440532013000", "EUR", "200.00"),
    ]

    # No pain.001 without the account payouts are sent from: back to the batch, saying why.
    response = finance.get(f"/console/payouts/batches/{batch.id}/file.xml")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/console/payouts/batches/{batch.id}")
    html = body(finance.get(response.headers["Location"]))
    assert (
        f"No pain.001 file for {batch.reference}: Set the account payouts are sent from (name, IBAN, BIC) in the "
        "payout settings first." in html
    )

    html = body(finance.get("/console/payouts/settings"))
    assert "Not set yet: pain.001 files cannot be written until it is." in html
    response = finance.submit(
        "/console/payouts/settings", {**DEBTOR, "debtor_iban": "FR14 2004 1010 0505 0001 3M02 607"}
    )
    assert response.status_code == 422
    html = body(response)
    assert _error(html, "debtor_iban") == "That IBAN is not valid (check the digits)."
    assert 'name="debtor_iban" type="text" value="FR14 2004 1010 0505 0001 3M02 607"' in html
    assert 'name="debtor_name" type="text" value="Acme Pay"' in html
    response = finance.submit("/console/payouts/settings", {**DEBTOR, "debtor_bic": "PSST"})
    assert response.status_code == 422 and "That BIC is not valid" in _error(body(response), "debtor_bic")
    assert _debtor(owner_engine) == []
    html = body(finance.submit("/console/payouts/settings", DEBTOR, follow_redirects=True))
    assert "Payouts are sent from Acme Pay, IBAN …2606 (PSSTFRPPPAR)" in html
    assert _facts(html, "debtor") == "Account holder Acme Pay IBAN configured, …2606 BIC PSSTFRPPPAR"
    assert "FR1420041010050500013M02606" not in html
    [(name, iban_encrypted, bic)] = _debtor(owner_engine)
    assert (name, bic) == ("Acme Pay", "PSSTFRPPPAR") and "FR14" not in iban_encrypted
    assert "Sent from Acme Pay, IBAN …2606 (PSSTFRPPPAR)." in body(finance.get("/console/payouts"))

    response = finance.get(f"/console/payouts/batches/{batch.id}/file.xml")
    assert response.status_code == 200 and response.mimetype == "application/xml"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{batch.reference}.xml"'
    document = etree.fromstring(response.data)
    header = document.find(f"{PAIN}CstmrCdtTrfInitn/{PAIN}GrpHdr")
    assert header.findtext(f"{PAIN}NbOfTxs") == "2" and header.findtext(f"{PAIN}CtrlSum") == "500.00"
    assert document.findtext(f".//{PAIN}DbtrAcct/{PAIN}Id/{PAIN}IBAN") == "FR1420041010050500013M02606"
    sent = {
        tx.findtext(f"{PAIN}PmtId/{PAIN}EndToEndId"): tx.findtext(f"{PAIN}Amt/{PAIN}InstdAmt")
        for tx in document.iter(f"{PAIN}CdtTrfTxInf")
    }
    assert sent == {first: "300.00", second: "200.00"}

    # The merchant sees its payouts on their way, and can no longer cancel them.
    html = body(owner.get("/merchant/payouts"))
    rows = {row[0]: row for row in _rows(html, "payout-list", "payout")}
    sent_at = {p.id: p.sent_at for p in _payouts(owner_engine)}
    assert rows[first][2] == "in_transit" and rows[first][5] == _local(sent_at[first]) and rows[first][7] == ""
    assert "/cancel" not in html
    assert _rows(html, "payout-balances", "balance") == [["EUR", "500.00 EUR", "0.00 EUR", "500.00 EUR"]]
    assert "Payouts go to Coffee GmbH, account …3000" in html


def test_bank_results_mark_payouts_paid_or_failed_and_return_the_money(app, acme, site, owner_engine):
    tenant, coffee, _ = acme
    _account(app, tenant, coffee, "Coffee GmbH", COFFEE_IBAN)
    paid = _payout(app, tenant, coffee, 30_000)
    failed = _payout(app, tenant, coffee, 20_000)
    _batched(app, tenant)
    [batch] = _batches(owner_engine)
    assert _available(app, tenant, coffee) == 50_000
    finance = _signed_in(site, tenant, FINANCE)
    data = _results(f"{paid},paid,", f"{failed},failed,AC04 account closed")

    html = body(_upload(finance, data, follow_redirects=True))
    assert "results.csv: 1 paid, 1 failed (returned to the merchants&#39; balances), 0 unchanged." in html
    assert _rows(html, "batch-list", "batch")[0][5:7] == ["1", "1"]
    html = body(finance.get(f"/console/payouts/batches/{batch.id}"))
    assert [row[5:] for row in _rows(html, "batch-payouts", "batch-payout")] == [
        ["paid", "—"],
        ["failed", "AC04 account closed"],
    ]
    assert _available(app, tenant, coffee) == 70_000
    [record] = _result_files(owner_engine)
    assert (record.filename, record.paid, record.failed, record.unchanged, record.uploaded_by) == (
        "results.csv",
        1,
        1,
        0,
        FINANCE,
    )

    owner = _signed_in(site, tenant, OWNER)
    html = body(owner.get("/merchant/payouts"))
    stored = {p.id: p for p in _payouts(owner_engine)}
    rows = {row[0]: row for row in _rows(html, "payout-list", "payout")}
    assert rows[failed][2:4] == [
        "failed",
        f"AC04 account closed (returned to your available balance {_local(stored[failed].failed_at)})",
    ]
    assert rows[paid][2:4] == ["paid", "—"] and rows[paid][6] == _local(stored[paid].paid_at)
    assert _rows(html, "payout-balances", "balance") == [["EUR", "700.00 EUR", "0.00 EUR", "0.00 EUR"]]

    # The same file again changes nothing, and says when it was imported.
    html = body(_upload(finance, data, "results-again.csv", follow_redirects=True))
    assert f"This file was already imported on {_local(record.created_at)} ({ZONE}); nothing changed." in html
    assert len(_result_files(owner_engine)) == 1 and _available(app, tenant, coffee) == 70_000
    assert {p.id: p.status for p in _payouts(owner_engine)} == {paid: "paid", failed: "failed"}


def test_a_malformed_result_file_is_refused_listing_its_lines(app, acme, site, owner_engine):
    tenant, coffee, tea = acme
    _account(app, tenant, coffee, "Coffee GmbH", COFFEE_IBAN)
    sent = _payout(app, tenant, coffee, 30_000)
    _batched(app, tenant)
    unsent = _payout(app, tenant, tea, 1_000)
    finance = _signed_in(site, tenant, FINANCE)

    response = _upload(
        finance, _results(f"{sent},paid,", "po_unknown,paid,", f"{sent},maybe,", f"{unsent},paid,", f"{sent},failed,")
    )
    assert response.status_code == 422
    html = body(response)
    problems = re.search(r'<div class="error" role="alert" id="result-problems">(.*?)</div>', html, re.S).group(1)
    assert "The file was not imported: nothing changed." in problems
    assert [_text(item) for item in re.findall(r"<li>(.*?)</li>", problems, re.S)] == [
        "line 3: no payout po_unknown of this tenant",
        "line 4: status must be paid or failed, not 'maybe'",
        f"line 5: {unsent} was never sent to the bank (it is pending)",
        "line 6: a failed payout needs the bank's reason",
    ]
    assert 'id="result-file-form"' in html and "No batches yet." not in html  # the page around it

    response = _upload(finance, b"payout,state\npo_1,paid\n")
    assert response.status_code == 422
    assert "line 1: the header lacks the column(s) payout_id, status" in _text(body(response))

    for data, message in [
        (b"", "The file is empty: choose the bank's result file."),
        (None, "Choose the bank's result file."),
        # Above the app's own request limit (4 MiB) and below this upload's: refused by its size.
        (b"x" * (10 * 1024 * 1024 + 1), "The file is larger than 10 MB."),
    ]:
        response = _upload(finance, data)
        assert response.status_code == 422
        assert _error(body(response), "file") == message

    assert _result_files(owner_engine) == []
    assert {p.id: p.status for p in _payouts(owner_engine)} == {sent: "in_transit", unsent: "pending"}
    assert _available(app, tenant, coffee) == 70_000


def test_an_operator_reads_payouts_but_cannot_change_anything(app, acme, site, owner_engine):
    tenant, coffee, _ = acme
    _account(app, tenant, coffee, "Coffee GmbH", COFFEE_IBAN)
    payout_id = _payout(app, tenant, coffee, 30_000)
    _batched(app, tenant)
    [batch] = _batches(owner_engine)
    _payout(app, tenant, coffee, 1_000)
    operator = _signed_in(site, tenant, OPERATOR)

    html = body(operator.get("/console/payouts"))
    assert _rows(html, "batch-list", "batch")[0][0] == batch.reference
    assert 'id="create-batches-form"' not in html and 'id="result-file-form"' not in html
    assert 'href="/console/payouts"' in html
    assert operator.get(f"/console/payouts/batches/{batch.id}").status_code == 200
    assert payout_id in body(operator.get(f"/console/payouts/batches/{batch.id}/file.csv"))
    html = body(operator.get("/console/payouts/settings"))
    assert 'id="debtor-form"' not in html and "Admins and finance set the account." in html

    for response in [
        operator.submit("/console/payouts/batches", form_page="/console/payouts"),
        operator.submit("/console/payouts/settings", DEBTOR, form_page="/console/payouts"),
        _upload(operator, _results(f"{payout_id},paid,")),
    ]:
        assert response.status_code == 403 and FORBIDDEN in body(response)
    assert len(_runs(owner_engine)) == 1 and _debtor(owner_engine) == [] and _result_files(owner_engine) == []
    assert [p.status for p in _payouts(owner_engine)] == ["in_transit", "pending"]


def test_another_tenants_batch_is_not_found(app, acme, make, site, owner_engine):
    tenant, coffee, _ = acme
    other = make.tenant("other")
    elsewhere = make.merchant(other, "Elsewhere", "owner@elsewhere.example.com")
    _topup(app, other, elsewhere, 10_000)
    _account(app, other, elsewhere, "Elsewhere Ltd", "NL91ABNA0417164300")
    theirs = _payout(app, other, elsewhere, 4_000)
    _batched(app, other)
    [their_batch] = _batches(owner_engine)
    _account(app, tenant, coffee, "Coffee GmbH", COFFEE_IBAN)
    _payout(app, tenant, coffee, 1_000)
    _batched(app, tenant)

    finance = _signed_in(site, tenant, FINANCE)
    for batch_id in (their_batch.id, uuid.uuid4()):
        for suffix in ("", "/file.csv", "/file.xml"):
            response = finance.get(f"/console/payouts/batches/{batch_id}{suffix}")
            assert response.status_code == 404, suffix
            assert "Page not found" in body(response)
    html = body(finance.get("/console/payouts"))
    assert their_batch.reference not in html and len(_rows(html, "batch-list", "batch")) == 1
    # A result file naming their payout is refused: it is not a payout of this tenant.
    response = _upload(finance, _results(f"{theirs},failed,closed"))
    assert response.status_code == 422 and f"line 2: no payout {theirs} of this tenant" in body(response)
    assert {p.id: p.status for p in _payouts(owner_engine)}[theirs] == "in_transit"
    # Control: their own staff open it.
    other_admin = _signed_in(site, other, other.admin_email)
    assert other_admin.get(f"/console/payouts/batches/{their_batch.id}").status_code == 200


def test_the_console_merchant_page_shows_the_bank_account_masked(app, acme, site):
    tenant, coffee, tea = acme
    with app.app_context(), tenant_context(db.session, tenant.id):
        clearing_payouts.set_bank_account(
            tenant.id, coffee, holder_name="Coffee GmbH", account=COFFEE_IBAN, bank_code="COBADEFFXXX", actor=SYSTEM
        )
        db.session.commit()
        db.session.remove()
    operator = _signed_in(site, tenant, OPERATOR)
    html = body(operator.get(f"/console/merchants/{coffee}"))
    text = _text(re.search(r'<p id="merchant-bank-account">(.*?)</p>', html, re.S).group(1))
    assert text == "Payouts go to Coffee GmbH, IBAN …3000 (COBADEFFXXX), DE."
    assert "DE89370400440532013000" not in html and "<form" not in html.split('id="merchant-bank-account"')[1]
    html = body(operator.get(f"/console/merchants/{tea}"))
    assert "No bank account: the merchant's payouts wait until its owner sets one." in unescape(html)
