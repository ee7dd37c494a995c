"""Withdrawals to the bank: bank accounts, payout batches with CSV and pain.001 files, and the
bank's result file (paid, failed and returned), all or nothing and idempotent."""

import csv
import io
from xml.etree import ElementTree as etree  # noqa: N813  (our own file, parsed in a test)

import pytest
import sqlalchemy as sa

import ledger
from clearing import jobs, payouts
from clearing.models import ClearingRun, PayoutBatch, PayoutResultFile
from core.db import db
from payments import balance_operations, refunds
from payments.errors import InvalidRequest
from payments.intents import MerchantContext
from payments.models import BalanceTransaction, Event, Payout
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope, tenant_context

FINANCE = Actor(kind="user", email="finance@acme.example.com")
PAIN = "{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}"


@pytest.fixture
def acme(app, make):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    tea = make.merchant(tenant, "Tea", "owner@tea.example.com")
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            for merchant in (coffee, tea):
                balance_operations.create_topup(
                    MerchantContext(tenant.id, merchant, False), amount=100_000, currency="eur"
                )
            db.session.commit()
        yield tenant, coffee, tea
        db.session.remove()


def _ctx(tenant, merchant):
    return MerchantContext(tenant.id, merchant, False)


def _payout(tenant, merchant, amount):
    with tenant_context(db.session, tenant.id):
        return balance_operations.create_payout(_ctx(tenant, merchant), amount=amount, currency="eur").id


def _accounts(tenant, coffee, tea):
    with tenant_context(db.session, tenant.id):
        payouts.set_bank_account(
            tenant.id,
            coffee,
            holder_name="Coffee GmbH",
            account="DE89 3704 0044 0532 0130 00",
            bank_code="COBADEFFXXX",
            actor=FINANCE,
        )
        payouts.set_bank_account(tenant.id, tea, holder_name="Tea B.V.", account="NL91ABNA0417164300", actor=FINANCE)
        payouts.set_debtor(
            tenant.id, name="Acme Pay", iban="FR1420041010050500013M02606", bic="PSSTFRPPPAR", actor=FINANCE
        )
        db.session.commit()


def _batch(tenant):
    with tenant_context(db.session, tenant.id):
        run = ClearingRun(tenant_id=tenant.id, kind="payout_batch")
        db.session.add(run)
        db.session.commit()
        outcome = payouts.create_batches(tenant.id, run, FINANCE.email)
        return run, outcome


def _available(tenant, merchant):
    with tenant_context(db.session, tenant.id):
        balance = refunds.balance(_ctx(tenant, merchant))
        return balance["available"][0]["amount"]


def _status(tenant, payout_id):
    with tenant_context(db.session, tenant.id):
        return db.session.get(Payout, (tenant.id, payout_id)).status


def _ledger_ok():
    with platform_scope(db.session):
        return ledger.check(db.session)


def _results(*lines):
    return ("payout_id,status,reason\n" + "".join(f"{line}\n" for line in lines)).encode()


def test_bank_accounts_are_validated_stored_encrypted_and_audited(acme, owner_engine):
    tenant, coffee, _ = acme
    with tenant_context(db.session, tenant.id):
        cases = [
            ({"account": "DE89370400440532013001"}, "account", "IBAN is not valid"),
            ({"account": "DE89370400440532013000", "bank_code": "NOPE"}, "bank_code", "BIC is not valid"),
            ({"account": "12345678"}, "bank_code", "needs its bank code"),
            ({"account": "12345678", "bank_code": "021000021", "country": "USA"}, "country", "two letters"),
            ({"account": "12-34"}, "account", "4 to 34 letters and digits"),
        ]
        for fields, field, message in cases:
            with pytest.raises(InvalidInput, match=message) as refused:
                payouts.set_bank_account(tenant.id, coffee, holder_name="Coffee GmbH", actor=FINANCE, **fields)
            assert refused.value.field == field
        db.session.rollback()
        assert payouts.bank_account_of(tenant.id, coffee) is None
        account = payouts.set_bank_account(
            tenant.id,
            coffee,
            holder_name="Coffee Inc",
            account="12345678",
            bank_code="021000021",
            country="us",
            actor=FINANCE,
        )
        db.session.commit()
        assert (account.kind, account.account_last4, account.country) == ("number", "5678", "US")
    with owner_engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT account_encrypted FROM merchant_bank_accounts")).scalar_one()
        changes = conn.execute(
            sa.text("SELECT changes FROM audit_events WHERE action = 'merchant.bank_account_set'")
        ).scalar_one()
    assert "12345678" not in stored
    assert changes == {"account": {"after": "…5678", "before": None}, "holder": {"after": "Coffee Inc", "before": None}}


def test_a_batch_sends_the_payouts_of_merchants_with_a_bank_account(acme):
    tenant, coffee, tea = acme
    first = _payout(tenant, coffee, 30_000)
    second = _payout(tenant, coffee, 20_000)
    theirs = _payout(tenant, tea, 10_000)
    with tenant_context(db.session, tenant.id):
        payouts.set_bank_account(
            tenant.id, coffee, holder_name="Coffee GmbH", account="DE89370400440532013000", actor=FINANCE
        )
        db.session.commit()
        assert [(g.currency, g.count, g.total, g.without_account) for g in payouts.pending_summary(tenant.id)] == [
            ("EUR", 3, 60_000, 1)
        ]
    run, outcome = _batch(tenant)
    assert outcome["payouts"] == 2 and outcome["waiting_for_bank_account"] == 1
    assert (run.total, run.processed) == (1, 1)
    assert [_status(tenant, p) for p in (first, second, theirs)] == ["in_transit", "in_transit", "pending"]
    with tenant_context(db.session, tenant.id):
        batch = db.session.execute(sa.select(PayoutBatch)).scalar_one()
        assert (batch.count, batch.total, batch.currency) == (2, 50_000, "EUR")
        rows = list(csv.DictReader(io.StringIO(payouts.batch_csv(batch))))
        # A payout sent to the bank can no longer be canceled.
        with pytest.raises(InvalidRequest, match="only a pending payout can be canceled"):
            balance_operations.cancel_payout(_ctx(tenant, coffee), first)
    assert [(r["payout_id"], r["account"], r["amount"]) for r in rows] == [
        (first, "DE89370400440532013000", "300.00"),
        (second, "DE89370400440532013000", "200.00"),
    ]
    # Nothing left to send: a second run makes no batch.
    _, again = _batch(tenant)
    assert again["payouts"] == 0
    assert _ledger_ok() == []


def test_the_pain001_file_is_valid_iso20022_with_every_payout(acme):
    tenant, coffee, tea = acme
    ids = [_payout(tenant, coffee, 12_345), _payout(tenant, tea, 500)]
    _accounts(tenant, coffee, tea)
    _batch(tenant)
    with tenant_context(db.session, tenant.id):
        batch = db.session.execute(sa.select(PayoutBatch)).scalar_one()
        xml = payouts.batch_pain001(batch)
    document = etree.fromstring(xml)
    assert document.findtext(f"{PAIN}CstmrCdtTrfInitn/{PAIN}GrpHdr/{PAIN}NbOfTxs") == "2"
    assert document.findtext(f"{PAIN}CstmrCdtTrfInitn/{PAIN}GrpHdr/{PAIN}CtrlSum") == "128.45"
    assert document.findtext(f".//{PAIN}DbtrAcct/{PAIN}Id/{PAIN}IBAN") == "FR1420041010050500013M02606"
    sent = {
        tx.findtext(f"{PAIN}PmtId/{PAIN}EndToEndId"): (
            tx.findtext(f"{PAIN}Amt/{PAIN}InstdAmt"),
            tx.findtext(f"{PAIN}CdtrAcct/{PAIN}Id/{PAIN}IBAN"),
        )
        for tx in document.iter(f"{PAIN}CdtTrfTxInf")
    }
    assert sent == {ids[0]: ("123.45", "DE89370400440532013000"), ids[1]: ("5.00", "NL91ABNA0417164300")}


def test_pain001_says_why_it_cannot_be_written(acme):
    tenant, coffee, _ = acme
    _payout(tenant, coffee, 1_000)
    with tenant_context(db.session, tenant.id):
        payouts.set_bank_account(
            tenant.id,
            coffee,
            holder_name="Coffee Inc",
            account="12345678",
            bank_code="021000021",
            country="US",
            actor=FINANCE,
        )
        db.session.commit()
    _batch(tenant)
    with tenant_context(db.session, tenant.id):
        batch = db.session.execute(sa.select(PayoutBatch)).scalar_one()
        with pytest.raises(payouts.BatchFileError, match="Set the account payouts are sent from"):
            payouts.batch_pain001(batch)
        payouts.set_debtor(
            tenant.id, name="Acme Pay", iban="FR1420041010050500013M02606", bic="PSSTFRPPPAR", actor=FINANCE
        )
        db.session.commit()
        with pytest.raises(payouts.BatchFileError, match="domestic account number, not an IBAN"):
            payouts.batch_pain001(batch)
        assert "12345678" in payouts.batch_csv(batch)


def test_bank_results_pay_and_return_failed_payouts_at_once(acme):
    tenant, coffee, tea = acme
    paid = _payout(tenant, coffee, 30_000)
    failed = _payout(tenant, tea, 10_000)
    _accounts(tenant, coffee, tea)
    _batch(tenant)
    assert _available(tenant, tea) == 90_000
    with tenant_context(db.session, tenant.id):
        outcome = payouts.import_results(
            tenant.id, "results.csv", _results(f"{paid},paid,", f"{failed},failed,AC04 account closed"), FINANCE
        )
        assert (outcome.file.paid, outcome.file.failed, outcome.file.unchanged) == (1, 1, 0)
        payout = db.session.get(Payout, (tenant.id, failed))
        assert (payout.status, payout.failure_message) == ("failed", "AC04 account closed")
        returned = db.session.execute(
            sa.select(BalanceTransaction).where(BalanceTransaction.type == "payout_failure")
        ).scalar_one()
        assert (returned.source, returned.amount, returned.status) == (failed, 10_000, "available")
        types = db.session.execute(sa.select(Event.type).where(Event.type.like("payout.%"))).scalars().all()
        assert sorted(types) == ["payout.created", "payout.created", "payout.failed", "payout.paid"]
        batch = db.session.execute(sa.select(PayoutBatch)).scalar_one()
        assert (batch.paid_count, batch.failed_count) == (1, 1)
    assert _status(tenant, paid) == "paid"
    assert _available(tenant, tea) == 100_000 and _available(tenant, coffee) == 70_000
    assert _ledger_ok() == []


def test_the_same_result_file_twice_changes_nothing(acme):
    tenant, coffee, tea = acme
    paid = _payout(tenant, coffee, 30_000)
    _accounts(tenant, coffee, tea)
    _batch(tenant)
    data = _results(f"{paid},paid,")
    with tenant_context(db.session, tenant.id):
        payouts.import_results(tenant.id, "a.csv", data, FINANCE)
        again = payouts.import_results(tenant.id, "a-copy.csv", data, FINANCE)
        assert again.already_imported and again.file.filename == "a.csv"
        # Another file with the same answer is taken, and changes nothing either.
        other = payouts.import_results(tenant.id, "b.csv", _results(f"{paid},PAID,", f"{paid},paid,"), FINANCE)
        assert (other.file.paid, other.file.unchanged) == (0, 1)
        assert db.session.execute(sa.select(sa.func.count()).select_from(PayoutResultFile)).scalar_one() == 2
        entries = db.session.execute(sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'payout.paid'"))
        assert entries.scalar_one() == 1


@pytest.mark.parametrize(
    "data, line, problem",
    [
        (b"\xff\xfeid,status\n", 1, "not UTF-8"),
        (b"payout,state\npo_1,paid\n", 1, "lacks the column(s) payout_id, status"),
        (b"payout_id,status,reason\n", 2, "no results"),
    ],
)
def test_a_malformed_result_file_is_refused_naming_the_line(acme, data, line, problem):
    tenant, _, _ = acme
    with tenant_context(db.session, tenant.id), pytest.raises(payouts.ResultFileError) as refused:
        payouts.import_results(tenant.id, "bad.csv", data, FINANCE)
    assert refused.value.problems[0][0] == line and problem in refused.value.problems[0][1]


def test_one_bad_line_refuses_the_whole_file(acme):
    tenant, coffee, tea = acme
    paid = _payout(tenant, coffee, 30_000)
    waiting = _payout(tenant, coffee, 1_000)
    _accounts(tenant, coffee, tea)
    _batch(tenant)
    unsent = _payout(tenant, tea, 2_000)
    data = _results(
        f"{paid},paid,",
        "po_unknown,paid,",
        f"{waiting},maybe,",
        f"{waiting},failed,",
        f"{unsent},paid,",
        f"{paid},failed,closed",
    )
    with tenant_context(db.session, tenant.id), pytest.raises(payouts.ResultFileError) as refused:
        payouts.import_results(tenant.id, "bad.csv", data, FINANCE)
    assert refused.value.problems == [
        (3, "no payout po_unknown of this tenant"),
        (4, "status must be paid or failed, not 'maybe'"),
        (5, "a failed payout needs the bank's reason"),
        (6, f"{unsent} was never sent to the bank (it is pending)"),
        (7, f"{paid} is also paid on line 2"),
    ]
    assert _status(tenant, paid) == "in_transit"
    with tenant_context(db.session, tenant.id):
        assert db.session.execute(sa.select(sa.func.count()).select_from(PayoutResultFile)).scalar_one() == 0


def test_a_payout_batch_run_through_the_worker(acme, run_jobs):
    tenant, coffee, tea = acme
    _payout(tenant, coffee, 5_000)
    _accounts(tenant, coffee, tea)
    with tenant_context(db.session, tenant.id):
        run = jobs.start_payout_batch(tenant.id, requested_by=FINANCE.email)
        assert jobs.start_payout_batch(tenant.id, requested_by=FINANCE.email).id == run.id
        db.session.remove()
    assert run_jobs() >= 1
    with tenant_context(db.session, tenant.id):
        done = db.session.get(ClearingRun, (tenant.id, run.id))
        assert (done.status, done.kind, done.outcome["payouts"]) == ("succeeded", "payout_batch", 1)
        assert db.session.execute(sa.select(PayoutBatch.created_by)).scalar_one() == FINANCE.email


def test_a_batch_keeps_the_account_it_was_sent_to_and_its_reference_is_the_message_id(acme):
    tenant, coffee, tea = acme
    payout = _payout(tenant, coffee, 4_000)
    _accounts(tenant, coffee, tea)
    _batch(tenant)
    with tenant_context(db.session, tenant.id):
        payouts.set_bank_account(
            tenant.id, coffee, holder_name="Coffee New", account="NL91ABNA0417164300", actor=FINANCE
        )
        db.session.commit()
        batch = db.session.execute(sa.select(PayoutBatch)).scalar_one()
        rows = list(csv.DictReader(io.StringIO(payouts.batch_csv(batch))))
        document = etree.fromstring(payouts.batch_pain001(batch))
    assert [(r["payout_id"], r["holder_name"], r["account"]) for r in rows] == [
        (payout, "Coffee GmbH", "DE89370400440532013000")
    ]
    assert document.findtext(f"{PAIN}CstmrCdtTrfInitn/{PAIN}GrpHdr/{PAIN}MsgId") == batch.reference


def test_the_sweep_sends_payouts_once_a_day_after_the_cut_off(acme, run_jobs):
    from datetime import UTC, datetime, time, timedelta

    from clearing import settlement

    tenant, coffee, tea = acme
    _payout(tenant, coffee, 3_000)
    _accounts(tenant, coffee, tea)
    with tenant_context(db.session, tenant.id):
        settlement.update_terms(tenant.id, time(18, 0), 1, FINANCE)
        db.session.commit()
    today = datetime.now(UTC).date()
    before = datetime.combine(today, time(17, 59), UTC)
    after = datetime.combine(today, time(18, 1), UTC)
    assert jobs.sweep(now=before)["payout_batches"] == 0
    assert jobs.sweep(now=after)["payout_batches"] == 1
    db.session.remove()
    run_jobs()
    _payout(tenant, coffee, 1_000)  # requested after today's batch: waits for tomorrow's
    assert jobs.sweep(now=after + timedelta(minutes=5))["payout_batches"] == 0
    assert jobs.sweep(now=after + timedelta(days=1))["payout_batches"] == 1
    db.session.remove()
    run_jobs()
    with tenant_context(db.session, tenant.id):
        assert [
            b.count for b in db.session.execute(sa.select(PayoutBatch).order_by(PayoutBatch.created_at)).scalars()
        ] == [1, 1]
