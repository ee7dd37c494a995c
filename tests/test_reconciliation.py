"""Reconciliation: statements imported as a whole or not at all, matched by reference then by
amount and date, and what is left booked to suspense, with the suspense workflow."""

import io
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import ledger
from clearing import jobs, payouts, reconciliation, suspense
from clearing.models import ClearingRun, StatementImport, StatementLine, SuspenseItem
from clearing.statement_formats import ColumnMapping
from core.db import db
from payments import balance_operations, intents, refunds
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.isolation import platform_scope, tenant_context

ANNA = Actor(kind="user", email="anna@acme.example.com")
BORIS = Actor(kind="user", email="boris@acme.example.com")
MAPPING = ColumnMapping(reference="ref", amount="amount", date="date", currency="currency", type="type")


@pytest.fixture
def acme(app, make, tmp_path):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    channel = make.channel_account(tenant.id)
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            reconciliation.save_mapping(tenant.id, channel, MAPPING, ANNA)
            db.session.commit()
        yield tenant, coffee, channel, tmp_path
        db.session.remove()


def _pay(tenant, merchant, amount):
    ctx = intents.MerchantContext(tenant.id, merchant, livemode=False)
    with tenant_context(db.session, tenant.id):
        pi = intents.create(ctx, amount=amount, currency="usd", payment_method="pm_card_visa", confirm=True)
        return pi.id, pi.channel_reference


def _refund(tenant, merchant, pi_id, amount):
    ctx = intents.MerchantContext(tenant.id, merchant, livemode=False)
    with tenant_context(db.session, tenant.id):
        refund = refunds.create(ctx, payment_intent=pi_id, amount=amount)
        return refund.id, refund.channel_reference


def _csv(*rows):
    today = datetime.now(UTC).date().isoformat()
    lines = ["ref,amount,currency,date,type"] + [f"{ref},{amount},USD,{today},{kind}" for ref, amount, kind in rows]
    return ("\n".join(lines) + "\n").encode()


def _import(tenant, channel, data, tmp_path, *, fmt="csv", filename="statement.csv", livemode=None):
    with tenant_context(db.session, tenant.id):
        stored = reconciliation.store_upload(
            tenant.id,
            io.BytesIO(data),
            filename=filename,
            fmt=fmt,
            channel_account_id=channel,
            livemode=livemode,
            upload_dir=tmp_path,
            actor=ANNA,
        )
        if stored.already_imported:
            return stored, None
        counts = reconciliation.run_import(tenant.id, stored.import_.id)
        return stored, counts


def _items(tenant, **where):
    with tenant_context(db.session, tenant.id):
        statement = sa.select(SuspenseItem).order_by(SuspenseItem.kind, SuspenseItem.amount)
        for key, value in where.items():
            statement = statement.where(getattr(SuspenseItem, key) == value)
        return db.session.execute(statement).scalars().all()


def _ledger_ok():
    with platform_scope(db.session):
        return ledger.check(db.session)


def _suspense_balance(tenant):
    with tenant_context(db.session, tenant.id):
        return ledger.account(tenant.id, "suspense", "USD", False).balance


def test_a_channel_statement_is_matched_and_the_rest_goes_to_suspense(acme):
    tenant, coffee, channel, tmp_path = acme
    paid, paid_ref = _pay(tenant, coffee, 1_000)
    differs, differs_ref = _pay(tenant, coffee, 2_000)
    missing, _ = _pay(tenant, coffee, 3_000)
    refund, refund_ref = _refund(tenant, coffee, paid, 400)
    stored, counts = _import(
        tenant,
        channel,
        _csv(
            (paid_ref, "10.00", "charge"),
            (differs_ref, "19.50", "charge"),
            ("ch_unknown", "7.00", "charge"),
            (refund_ref, "-4.00", "refund"),
        ),
        tmp_path,
    )
    assert {k: counts[k] for k in ("lines", "new", "matched", "long", "mismatch", "short")} == {
        "lines": 4,
        "new": 4,
        "matched": 2,
        "long": 1,
        "mismatch": 1,
        "short": 1,
    }
    with tenant_context(db.session, tenant.id):
        matched = dict(
            db.session.execute(
                sa.select(StatementLine.reference, StatementLine.record_id).where(StatementLine.status == "matched")
            ).all()
        )
    assert matched == {paid_ref: paid, refund_ref: refund}
    long, mismatch, short = _items(tenant, kind="long") + _items(tenant, kind="mismatch") + _items(tenant, kind="short")
    assert (long.amount, long.statement_line_id is not None) == (-700, True)
    assert (mismatch.record_id, mismatch.amount) == (differs, 50)  # 19.50 on the statement, 20.00 here
    assert (short.record_id, short.amount) == (missing, 3_000)
    # Suspense holds exactly what is unexplained: -7.00 + 0.50 + 30.00.
    assert _suspense_balance(tenant) == -700 + 50 + 3_000
    assert _ledger_ok() == []
    assert stored.import_.status == "succeeded"


def test_the_same_file_twice_and_overlapping_files_import_each_line_once(acme):
    tenant, coffee, channel, tmp_path = acme
    first, first_ref = _pay(tenant, coffee, 1_000)
    later, later_ref = _pay(tenant, coffee, 2_500)
    data = _csv((first_ref, "10.00", "charge"))
    stored, _ = _import(tenant, channel, data, tmp_path)
    assert [i.record_id for i in _items(tenant, kind="short")] == [later]
    again, counts = _import(tenant, channel, data, tmp_path, filename="copy.csv")
    assert again.already_imported and counts is None and again.import_.id == stored.import_.id
    # The next day's file repeats yesterday's line and brings the missing payment.
    _, counts = _import(tenant, channel, _csv((first_ref, "10.00", "charge"), (later_ref, "25.00", "charge")), tmp_path)
    assert (counts["new"], counts["duplicates"], counts["matched"], counts["resolved_shorts"]) == (1, 1, 1, 1)
    (short,) = _items(tenant, kind="short")
    assert (short.status, short.resolution) == ("resolved", "matched")
    assert _suspense_balance(tenant) == 0
    with tenant_context(db.session, tenant.id):
        assert db.session.execute(sa.select(sa.func.count()).select_from(StatementLine)).scalar_one() == 2
    assert _ledger_ok() == []


def test_lines_without_a_known_reference_match_by_amount_and_date(acme):
    tenant, coffee, channel, tmp_path = acme
    one, _ = _pay(tenant, coffee, 1_234)
    two, _ = _pay(tenant, coffee, 1_234)
    _, counts = _import(tenant, channel, _csv(("", "12.34", "charge"), ("BANKREF-9", "12.34", "charge")), tmp_path)
    assert (counts["matched"], counts["long"], counts["short"]) == (2, 0, 0)
    with tenant_context(db.session, tenant.id):
        records = db.session.execute(sa.select(StatementLine.record_id).order_by(StatementLine.line_no)).scalars().all()
    assert sorted(records) == sorted([one, two])


def test_a_malformed_file_imports_nothing_and_names_the_line(acme):
    tenant, coffee, channel, tmp_path = acme
    _, ref = _pay(tenant, coffee, 1_000)
    data = _csv((ref, "10.00", "charge"), ("ch_x", "ten", "charge"))
    stored, counts = _import(tenant, channel, data, tmp_path)
    assert counts == {"error": "line 3: 'ten' is not an amount"}
    with tenant_context(db.session, tenant.id):
        row = db.session.get(StatementImport, (tenant.id, stored.import_.id))
        assert (row.status, row.error_line) == ("failed", 3)
        assert db.session.execute(sa.select(sa.func.count()).select_from(StatementLine)).scalar_one() == 0
    assert _items(tenant) == []


def test_a_bank_statement_matches_payouts_by_end_to_end_id(acme):
    tenant, coffee, _, tmp_path = acme
    ctx = intents.MerchantContext(tenant.id, coffee, False)
    with tenant_context(db.session, tenant.id):
        balance_operations.create_topup(ctx, amount=50_000, currency="eur")
        payout = balance_operations.create_payout(ctx, amount=12_345, currency="eur").id
        payouts.set_bank_account(tenant.id, coffee, holder_name="Coffee", account="DE89370400440532013000", actor=ANNA)
        db.session.commit()
        run = ClearingRun(tenant_id=tenant.id, kind="payout_batch")
        db.session.add(run)
        db.session.commit()
        payouts.create_batches(tenant.id, run, ANNA.email)
    booked = datetime.now(UTC).date().isoformat()
    camt = f"""<?xml version="1.0"?>
    <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt>
      <Ntry><Amt Ccy="EUR">123.45</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>{booked}</Dt></BookgDt>
        <NtryDtls><TxDtls><Refs><EndToEndId>{payout}</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>
      <Ntry><Amt Ccy="EUR">5.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>{booked}</Dt></BookgDt></Ntry>
    </Stmt></BkToCstmrStmt></Document>""".encode()
    _, counts = _import(tenant, None, camt, tmp_path, fmt="camt053", filename="bank.xml", livemode=False)
    assert (counts["matched"], counts["long"], counts["short"]) == (1, 1, 0)
    (long,) = _items(tenant, kind="long")
    assert (long.amount, long.currency, long.channel_account_id) == (500, "EUR", None)
    assert _ledger_ok() == []


def test_the_suspense_workflow_with_a_second_person_for_write_offs(acme):
    tenant, coffee, channel, tmp_path = acme
    _, ref = _pay(tenant, coffee, 1_000)
    _import(
        tenant,
        channel,
        _csv((ref, "10.00", "charge"), ("ch_a", "3.00", "charge"), ("ch_b", "4.00", "charge")),
        tmp_path,
    )
    first, second = _items(tenant, kind="long")
    with tenant_context(db.session, tenant.id):
        suspense.assign(tenant.id, first.id, "Boris@acme.example.com", ANNA)
        suspense.add_comment(tenant.id, first.id, "Asked the channel for the order behind ch_b", BORIS)
        with pytest.raises(InvalidInput, match="reason"):
            suspense.resolve_by_adjustment(tenant.id, first.id, "channel_fees", "", BORIS)
        with pytest.raises(InvalidInput, match="Choose the account"):
            suspense.resolve_by_adjustment(tenant.id, first.id, "merchant_available", "fee", BORIS)
        suspense.resolve_by_adjustment(tenant.id, first.id, "channel_fees", "channel refunded its fee", BORIS)
        suspense.request_write_off(tenant.id, second.id, "too small to chase", ANNA)
        with pytest.raises(InvalidInput, match="second person"):
            suspense.approve_write_off(tenant.id, second.id, ANNA)
        suspense.approve_write_off(tenant.id, second.id, BORIS)
        db.session.commit()
        assert [c.body for c in suspense.comments(tenant.id, first.id)] == [
            "Asked the channel for the order behind ch_b"
        ]
        actions = (
            db.session.execute(
                sa.text("SELECT action FROM audit_events WHERE object_type = 'suspense_item' ORDER BY created_at")
            )
            .scalars()
            .all()
        )
    assert actions == [
        "suspense.assigned",
        "suspense.commented",
        "suspense.adjusted",
        "suspense.write_off_requested",
        "suspense.written_off",
    ]
    statuses = sorted((i.status, i.resolution, i.assignee) for i in _items(tenant))
    assert statuses == [("resolved", "adjusted", "boris@acme.example.com"), ("written_off", "written_off", None)]
    assert _suspense_balance(tenant) == 0
    with tenant_context(db.session, tenant.id):
        # Money nobody can explain that we hold (3.00 on the statement only) is written off as a gain: a credit.
        assert ledger.account(tenant.id, "write_offs", "USD", False).balance == -300
    assert _ledger_ok() == []


def test_open_suspense_by_age(acme):
    tenant, coffee, channel, tmp_path = acme
    _import(tenant, channel, _csv(("ch_a", "3.00", "charge"), ("ch_b", "-4.00", "refund")), tmp_path)
    old, new = _items(tenant)
    with tenant_context(db.session, tenant.id):
        db.session.execute(
            sa.update(SuspenseItem)
            .where(SuspenseItem.id == old.id)
            .values(opened_at=datetime.now(UTC) - timedelta(days=40))
        )
        db.session.commit()
        report = suspense.open_by_age(tenant.id)
    assert {(r["age"], r["count"]) for r in report} == {("0–7 days", 1), ("31–90 days", 1)}
    assert sum(r["amount"] for r in report) == 700


def test_an_import_through_the_worker_shows_progress_and_runs_once(acme, run_jobs):
    tenant, coffee, channel, tmp_path = acme
    _, ref = _pay(tenant, coffee, 1_000)
    with tenant_context(db.session, tenant.id):
        stored = reconciliation.store_upload(
            tenant.id,
            io.BytesIO(_csv((ref, "10.00", "charge"))),
            filename="s.csv",
            fmt="csv",
            channel_account_id=channel,
            livemode=None,
            upload_dir=tmp_path,
            actor=ANNA,
        )
        import_id = stored.import_.id
        run = jobs.start_import(tenant.id, import_id, requested_by=ANNA.email)
        run_id = run.id
        assert jobs.start_import(tenant.id, import_id, requested_by=ANNA.email).id == run_id
        db.session.remove()
    assert run_jobs() >= 1
    with tenant_context(db.session, tenant.id):
        done = db.session.get(ClearingRun, (tenant.id, run_id))
        assert (done.status, done.processed, done.total) == ("succeeded", 2, 2)
        assert done.outcome["matched"] == 1
        # Running the finished import again changes nothing.
        assert reconciliation.run_import(tenant.id, import_id)["matched"] == 1
        assert db.session.execute(sa.select(sa.func.count()).select_from(StatementLine)).scalar_one() == 1


def test_a_statement_fetched_from_the_channel_is_reconciled(acme):
    tenant, coffee, channel, tmp_path = acme
    paid, _ = _pay(tenant, coffee, 1_500)
    _refund(tenant, coffee, paid, 500)
    with tenant_context(db.session, tenant.id):
        stored = reconciliation.fetch_statement(
            tenant.id, channel, datetime.now(UTC).date(), upload_dir=tmp_path, actor=ANNA
        )
        assert (stored.import_.format, stored.already_imported) == ("channel", False)
        counts = reconciliation.run_import(tenant.id, stored.import_.id)
        # Fetching the same day again brings the same file: nothing new.
        again = reconciliation.fetch_statement(
            tenant.id, channel, datetime.now(UTC).date(), upload_dir=tmp_path, actor=ANNA
        )
    assert (counts["lines"], counts["matched"], counts["long"], counts["short"]) == (2, 2, 0, 0)
    assert again.already_imported


def test_the_sweep_fetches_yesterdays_statement_once(acme, run_jobs):
    tenant, coffee, channel, tmp_path = acme
    tomorrow = datetime.now(UTC) + timedelta(days=1)  # the sweep fetches "yesterday": today's payments
    _pay(tenant, coffee, 1_500)
    assert jobs.sweep(now=tomorrow)["fetches"] == 1
    db.session.remove()
    assert run_jobs() >= 2  # the fetch, then the import it queued
    with tenant_context(db.session, tenant.id):
        (imported,) = reconciliation.imports(tenant.id)
        assert (imported.format, imported.status, imported.counts["matched"]) == ("channel", "succeeded", 1)
    db.session.remove()
    assert jobs.sweep(now=tomorrow)["fetches"] == 0


def test_platform_only_records_are_e_mailed_to_admins_and_finance_in_the_tenants_brand(acme, make, outbox):
    from conftest import text_of

    tenant, coffee, channel, tmp_path = acme
    make.user(tenant, "finance@acme.example.com", "finance")
    make.user(tenant, "ops@acme.example.com", "operator")
    _pay(tenant, coffee, 1_000)
    _pay(tenant, coffee, 2_500)
    _import(tenant, channel, _csv(("ch_other", "7.00", "charge")), tmp_path, filename="acme-day.csv")
    db.session.remove()
    messages = [m for m in outbox() if "missing from a statement" in m["Subject"]]
    assert sorted(m["To"] for m in messages) == ["admin@acme.example.com", "finance@acme.example.com"]
    body = text_of(messages[0])
    assert '"acme-day.csv"' in body and "2 records" in body and "2 for 35.00 USD" in body
    assert "/console/suspense?kind=short" in body and messages[0]["Subject"].startswith("Acme:")


def test_one_line_per_record_a_second_line_for_the_same_money_goes_to_suspense(acme):
    tenant, coffee, channel, tmp_path = acme
    _, ref = _pay(tenant, coffee, 1_000)
    _, counts = _import(tenant, channel, _csv((ref, "10.00", "charge"), (ref, "10.00", "charge")), tmp_path)
    assert (counts["matched"], counts["long"]) == (1, 1)
    # A later statement booking the same charge again: the record is taken, the line is unexplained.
    today = datetime.now(UTC).date() + timedelta(days=1)
    data = f"ref,amount,currency,date,type\n{ref},10.00,USD,{today.isoformat()},charge\n".encode()
    _, counts = _import(tenant, channel, data, tmp_path)
    assert (counts["matched"], counts["long"]) == (0, 1)


def test_a_quiet_day_at_the_channel_is_an_empty_import_not_a_failure(acme):
    tenant, _, channel, tmp_path = acme
    with tenant_context(db.session, tenant.id):
        stored = reconciliation.fetch_statement(
            tenant.id, channel, datetime.now(UTC).date() - timedelta(days=30), upload_dir=tmp_path, actor=ANNA
        )
        counts = reconciliation.run_import(tenant.id, stored.import_.id)
        assert counts["lines"] == 0
        assert db.session.get(StatementImport, (tenant.id, stored.import_.id)).status == "succeeded"
        with pytest.raises(InvalidInput, match="Choose a format"):
            reconciliation.store_upload(
                tenant.id,
                io.BytesIO(b"x"),
                filename="x.csv",
                fmt="channel",
                channel_account_id=channel,
                livemode=None,
                upload_dir=tmp_path,
                actor=ANNA,
            )


def test_matching_by_hand_needs_the_same_money(acme):
    tenant, coffee, channel, tmp_path = acme
    small, _ = _pay(tenant, coffee, 500)
    other, _ = _pay(tenant, coffee, 700)
    _import(tenant, channel, _csv(("ch_x", "7.00", "charge"), ("ch_y", "3.00", "charge")), tmp_path)
    # ch_x matched the 7.00 payment by amount; 5.00 is short; ch_y (3.00) is long.
    (long,) = _items(tenant, kind="long")
    with tenant_context(db.session, tenant.id):
        with pytest.raises(InvalidInput, match="is 5.00 USD, the item 3.00 USD"):
            suspense.resolve_by_match(tenant.id, long.id, "payment", small, "the channel's order", BORIS)
        db.session.rollback()
    # A later statement's 7.00 line without a known reference, outside the date window: long.
    later = datetime.now(UTC).date() + timedelta(days=10)
    _import(tenant, channel, f"ref,amount,currency,date,type\nch_z,7.00,USD,{later},charge\n".encode(), tmp_path)
    (again,) = [i for i in _items(tenant, kind="long") if i.amount == -700]
    with tenant_context(db.session, tenant.id), pytest.raises(InvalidInput, match="already matches payment"):
        suspense.resolve_by_match(tenant.id, again.id, "payment", other, "the channel's order", BORIS)
