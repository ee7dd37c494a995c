"""Withdrawals to the bank: merchants' bank accounts, payout batches and their files, bank results.

A merchant's payout request holds its amount at once (`payments.balance_operations.create_payout`:
available → reserved, status `pending`). Here:

- `create_batches` (the `payout_batch` clearing run) claims the pending payouts of merchants with a
  bank account, per currency and mode, in one transaction per batch: `UPDATE ... RETURNING` sets
  them `in_transit` with the batch, and one journal entry moves their sum from each merchant's
  reserved balance to `payouts_in_transit`. A cancel racing it waits for the row lock and then finds
  the payout no longer pending.
- `batch_csv` and `batch_pain001` write the bank file: CSV for every batch, ISO 20022 pain.001
  (pain.001.001.03, by the `sepaxml` library, validated against its schema) when every payee has an
  IBAN and the currency has two decimals.
- `import_results` reads the bank's result file (CSV: `payout_id,status,reason`; status `paid` or
  `failed`), all or nothing: a file with any bad line is refused naming each line and its problem,
  and nothing of it is imported; the same file twice (by its SHA-256) changes nothing. A paid
  payout moves `payouts_in_transit` → `bank`; a failed one goes back to the merchant's available
  balance at once, with a `payout_failure` balance transaction and a `payout.failed` event.
"""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sepaxml import SepaTransfer
from stdnum import bic as bic_number
from stdnum import iban as iban_number
from stdnum.exceptions import ValidationError

import ledger
from clearing.models import (
    ClearingRun,
    ClearingSettings,
    MerchantBankAccount,
    PayoutBatch,
    PayoutBatchLine,
    PayoutResultFile,
)
from core import crypto
from core.db import db
from core.i18n import gettext
from core.money import exponent, to_major
from payments import balance_transactions, events
from payments.balance_operations import payout_object
from payments.models import Payout
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput
from tenants.models import Merchant

MAX_ERRORS = 20  # lines named in one refusal of a result file


def _now() -> datetime:
    return datetime.now(UTC)


# --- bank accounts -------------------------------------------------------------------------


def _clean_account(account: str, bank_code: str, country: str) -> tuple[str, str, str | None, str]:
    """(kind, account, bank_code, country) or InvalidInput naming the field."""
    compact = "".join((account or "").split()).upper()
    if not compact:
        raise InvalidInput(gettext("Give the account's IBAN or account number."), "account")
    code = "".join((bank_code or "").split()).upper() or None
    if compact[:2].isalpha() and compact[2:4].isdigit():
        try:
            compact = iban_number.validate(compact)
        except ValidationError:
            raise InvalidInput(gettext("That IBAN is not valid (check the digits)."), "account") from None
        if code is not None:
            try:
                code = bic_number.validate(code)
            except ValidationError:
                raise InvalidInput(
                    gettext("That BIC is not valid: 8 or 11 letters and digits, like ABNANL2A."), "bank_code"
                ) from None
        return "iban", compact, code, compact[:2]
    if not compact.isalnum() or not 4 <= len(compact) <= 34:
        raise InvalidInput(gettext("An account number has 4 to 34 letters and digits."), "account")
    if code is None:
        raise InvalidInput(
            gettext("An account number needs its bank code (routing number, sort code, CNAPS code)."), "bank_code"
        )
    country = (country or "").strip().upper()
    if len(country) != 2 or not country.isalpha():
        raise InvalidInput(gettext("Give the bank's country as two letters, like US or CN."), "country")
    return "number", compact, code, country


def set_bank_account(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    *,
    holder_name: str,
    account: str,
    bank_code: str = "",
    bank_name: str = "",
    country: str = "",
    actor: Actor,
) -> MerchantBankAccount:
    """Set where the merchant's payouts go (validated; the account is stored encrypted)."""
    if db.session.get(Merchant, (tenant_id, merchant_id)) is None:
        raise InvalidInput(gettext("That merchant does not exist."), "merchant_id")
    holder = (holder_name or "").strip()
    if not holder or len(holder) > 140:
        raise InvalidInput(gettext("Give the account holder's name (at most 140 characters)."), "holder_name")
    kind, number, code, country_code = _clean_account(account, bank_code, country)
    bank = (bank_name or "").strip()[:140]
    row = db.session.get(MerchantBankAccount, (tenant_id, merchant_id), with_for_update=True)
    before = None if row is None else {"holder": row.holder_name, "account": f"…{row.account_last4}"}
    if row is None:
        row = MerchantBankAccount(tenant_id=tenant_id, merchant_id=merchant_id)
        db.session.add(row)
    row.holder_name, row.kind, row.account_encrypted = holder, kind, crypto.encrypt(number)
    row.account_last4, row.bank_code, row.bank_name, row.country = number[-4:], code, bank, country_code
    row.updated_at = _now()
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "merchant.bank_account_set",
        "merchant",
        merchant_id,
        audit.changes(before or {}, {"holder": holder, "account": f"…{number[-4:]}"}),
    )
    return row


def bank_account_of(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> MerchantBankAccount | None:
    return db.session.get(MerchantBankAccount, (tenant_id, merchant_id))


def set_debtor(tenant_id: uuid.UUID, *, name: str, iban: str, bic: str, actor: Actor) -> None:
    """The tenant's account payouts are sent from, as it appears in pain.001 files."""
    name = (name or "").strip()
    if not name or len(name) > 140:
        raise InvalidInput(gettext("Give the account holder's name (at most 140 characters)."), "debtor_name")
    try:
        iban_value = iban_number.validate(iban or "")
    except ValidationError:
        raise InvalidInput(gettext("That IBAN is not valid (check the digits)."), "debtor_iban") from None
    try:
        bic_value = bic_number.validate(bic or "")
    except ValidationError:
        raise InvalidInput(
            gettext("That BIC is not valid: 8 or 11 letters and digits, like ABNANL2A."), "debtor_bic"
        ) from None
    row = db.session.get(ClearingSettings, tenant_id, with_for_update=True)
    if row is None:
        row = ClearingSettings(tenant_id=tenant_id)
        db.session.add(row)
    before = {
        "name": row.debtor_name,
        "bic": row.debtor_bic,
        "iban": f"…{crypto.decrypt(row.debtor_iban_encrypted)[-4:]}" if row.debtor_iban_encrypted else None,
    }
    row.debtor_name, row.debtor_iban_encrypted, row.debtor_bic = name, crypto.encrypt(iban_value), bic_value
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "clearing.debtor_set",
        "tenant",
        tenant_id,
        audit.changes(before, {"name": name, "bic": bic_value, "iban": f"…{iban_value[-4:]}"}),
    )


# --- batches -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingGroup:
    currency: str
    livemode: bool
    count: int
    total: int
    without_account: int


def pending_summary(tenant_id: uuid.UUID) -> list[PendingGroup]:
    """Requested payouts not yet sent, per currency and mode, and how many wait for a bank account."""
    has_account = sa.exists().where(
        MerchantBankAccount.tenant_id == Payout.tenant_id, MerchantBankAccount.merchant_id == Payout.merchant_id
    )
    rows = db.session.execute(
        sa.select(
            Payout.currency,
            Payout.livemode,
            sa.func.count(),
            sa.func.sum(Payout.amount),
            sa.func.count().filter(~has_account),
        )
        .where(Payout.tenant_id == tenant_id, Payout.status == "pending")
        .group_by(Payout.currency, Payout.livemode)
        .order_by(Payout.livemode.desc(), Payout.currency)
    ).all()
    return [PendingGroup(c, live, n, int(total), int(missing)) for c, live, n, total, missing in rows]


_CLAIM = sa.text(
    """
    UPDATE payouts AS p SET status = 'in_transit', batch_id = :batch_id, sent_at = :now
    WHERE p.tenant_id = :tenant_id AND p.status = 'pending' AND p.currency = :currency AND p.livemode = :livemode
      AND EXISTS (SELECT 1 FROM merchant_bank_accounts AS b
                  WHERE b.tenant_id = p.tenant_id AND b.merchant_id = p.merchant_id)
    RETURNING p.id, p.merchant_id, p.amount
    """
)


# The bank account each claimed payout goes to, as it is now: the batch keeps it.
_SNAPSHOT = sa.text(
    """
    INSERT INTO payout_batch_lines (tenant_id, batch_id, payout_id, holder_name, kind, account_encrypted,
                                    account_last4, bank_code, country)
    SELECT p.tenant_id, p.batch_id, p.id, b.holder_name, b.kind, b.account_encrypted, b.account_last4,
           b.bank_code, b.country
    FROM payouts AS p
    JOIN merchant_bank_accounts AS b ON b.tenant_id = p.tenant_id AND b.merchant_id = p.merchant_id
    WHERE p.tenant_id = :tenant_id AND p.batch_id = :batch_id
    """
)


def create_batch(
    tenant_id: uuid.UUID, currency: str, livemode: bool, *, run_id: uuid.UUID | None, created_by: str | None
) -> PayoutBatch | None:
    """Claim the group's sendable payouts into a new batch, in the caller's transaction; None when
    there is nothing to send."""
    batch_id = uuid.uuid4()
    now = _now()
    claimed = db.session.execute(
        _CLAIM,
        {"tenant_id": tenant_id, "batch_id": batch_id, "now": now, "currency": currency, "livemode": livemode},
    ).all()
    if not claimed:
        return None
    per_merchant: dict[uuid.UUID, int] = defaultdict(int)
    for _, merchant_id, amount in claimed:
        per_merchant[merchant_id] += amount
    total = sum(per_merchant.values())
    batch = PayoutBatch(
        tenant_id=tenant_id,
        id=batch_id,
        reference=f"PB{now:%Y%m%d}-{batch_id.hex[:12]}",
        currency=currency,
        livemode=livemode,
        count=len(claimed),
        total=total,
        run_id=run_id,
        created_by=created_by,
    )
    db.session.add(batch)
    db.session.flush()
    db.session.execute(_SNAPSHOT, {"tenant_id": tenant_id, "batch_id": batch_id})
    lines = [
        (ledger.account_ref(tenant_id, "merchant_reserved", currency, livemode, merchant_id), amount)
        for merchant_id, amount in sorted(per_merchant.items())
    ]
    lines.append((ledger.account_ref(tenant_id, "payouts_in_transit", currency, livemode), -total))
    ledger.post(tenant_id, "payout_batch.sent", str(batch_id), lines, livemode, description=f"batch {batch.reference}")
    audit.record(
        tenant_id,
        Actor(kind="user" if created_by else "system", email=created_by),
        "payout_batch.created",
        "payout_batch",
        batch_id,
        audit.created(reference=batch.reference, currency=currency, count=len(claimed), total=total),
    )
    return batch


def create_batches(tenant_id: uuid.UUID, run: ClearingRun, created_by: str | None = None) -> dict:
    """The run: one committed batch per (currency, mode) with sendable payouts; progress on the run."""
    groups = [g for g in pending_summary(tenant_id) if g.count > g.without_account]
    run.total = run.processed + len(groups)
    db.session.commit()
    for group in groups:
        create_batch(tenant_id, group.currency, group.livemode, run_id=run.id, created_by=created_by)
        run.processed += 1
        db.session.commit()
    rows = db.session.execute(
        sa.select(PayoutBatch).where(PayoutBatch.tenant_id == tenant_id, PayoutBatch.run_id == run.id)
    ).scalars()
    batches = [
        {"reference": b.reference, "currency": b.currency, "livemode": b.livemode, "count": b.count, "total": b.total}
        for b in rows
    ]
    waiting = sum(g.without_account for g in pending_summary(tenant_id))
    run.outcome = {"batches": batches, "payouts": sum(b["count"] for b in batches), "waiting_for_bank_account": waiting}
    db.session.commit()
    return run.outcome


# --- bank files ----------------------------------------------------------------------------


class BatchFileError(ValueError):
    """A bank file that cannot be written for this batch; the message says why."""


@dataclass(frozen=True)
class BatchLine:
    payout_id: str
    merchant: str
    holder: str
    kind: str
    account: str
    bank_code: str | None
    country: str
    amount: int
    description: str


def batch_lines(batch: PayoutBatch) -> list[BatchLine]:
    """The batch's payouts with the bank accounts they were sent to (kept when the batch was made)."""
    rows = db.session.execute(
        sa.select(Payout, PayoutBatchLine, Merchant.name)
        .join(
            PayoutBatchLine,
            sa.and_(
                PayoutBatchLine.tenant_id == Payout.tenant_id,
                PayoutBatchLine.batch_id == Payout.batch_id,
                PayoutBatchLine.payout_id == Payout.id,
            ),
        )
        .join(Merchant, sa.and_(Merchant.tenant_id == Payout.tenant_id, Merchant.id == Payout.merchant_id))
        .where(Payout.tenant_id == batch.tenant_id, Payout.batch_id == batch.id)
        .order_by(Payout.created_at, Payout.id)
    ).all()
    return [
        BatchLine(
            payout.id,
            name,
            account.holder_name,
            account.kind,
            crypto.decrypt(account.account_encrypted),
            account.bank_code,
            account.country,
            payout.amount,
            (payout.description or f"Payout {payout.id}")[:140],
        )
        for payout, account, name in rows
    ]


def batch_csv(batch: PayoutBatch) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("payout_id", "merchant", "holder_name", "account", "bank_code", "country", "currency", "amount"))
    for line in batch_lines(batch):
        writer.writerow(
            (
                line.payout_id,
                line.merchant,
                line.holder,
                line.account,
                line.bank_code or "",
                line.country,
                batch.currency,
                to_major(line.amount, batch.currency),
            )
        )
    return out.getvalue()


class _BatchTransfer(SepaTransfer):
    """sepaxml's credit transfer with the batch's reference as the message id (MsgId), so that the
    bank recognises the same batch uploaded twice (the library makes up a new id otherwise)."""

    def __init__(self, msg_id: str, config: dict):
        self._batch_msg_id = msg_id
        super().__init__(config, schema="pain.001.001.03")

    def _create_header(self):
        self.msg_id = self._batch_msg_id
        super()._create_header()


def batch_pain001(batch: PayoutBatch, execution_date: date | None = None) -> bytes:
    """ISO 20022 pain.001.001.03 by `sepaxml` (schema-validated), or BatchFileError saying why not."""
    settings = db.session.get(ClearingSettings, batch.tenant_id)
    if settings is None or not settings.debtor_iban_encrypted:
        raise BatchFileError(
            gettext("Set the account payouts are sent from (name, IBAN, BIC) in the payout settings first.")
        )
    if exponent(batch.currency) != 2:
        raise BatchFileError(
            gettext(
                "pain.001 files here carry two-decimal currencies; %(currency)s has not two.", currency=batch.currency
            )
        )
    lines = batch_lines(batch)
    without_iban = [line.payout_id for line in lines if line.kind != "iban"]
    if without_iban:
        raise BatchFileError(
            gettext(
                "%(count)s payee(s) have a domestic account number, not an IBAN (first: %(first)s): "
                "use the CSV file for this batch.",
                count=len(without_iban),
                first=without_iban[0],
            )
        )
    transfer = _BatchTransfer(
        batch.reference,
        {
            "name": settings.debtor_name,
            "IBAN": crypto.decrypt(settings.debtor_iban_encrypted),
            "BIC": settings.debtor_bic,
            "batch": True,
            "currency": batch.currency,
        },
    )
    when = execution_date or _now().date()
    for line in lines:
        payment = {
            "name": line.holder[:70],
            "IBAN": line.account,
            "amount": line.amount,
            "execution_date": when,
            "description": line.description,
            "endtoend_id": line.payout_id,
            "currency": batch.currency,
        }
        if line.bank_code:
            payment["BIC"] = line.bank_code
        transfer.add_payment(payment)
    return transfer.export(validate=True)


# --- bank results --------------------------------------------------------------------------


class ResultFileError(ValueError):
    """A result file refused as a whole; `problems` are (line number, message)."""

    def __init__(self, problems: list[tuple[int, str]]):
        self.problems = problems
        super().__init__("; ".join(f"line {n}: {m}" for n, m in problems))


@dataclass
class ImportOutcome:
    file: PayoutResultFile
    already_imported: bool = False
    batches: set[uuid.UUID] = field(default_factory=set)


def _read_lines(data: bytes) -> list[tuple[int, dict[str, str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ResultFileError([(line, gettext("the file is not UTF-8 text"))]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    missing = [name for name in ("payout_id", "status") if name not in header]
    if missing:
        raise ResultFileError(
            [
                (
                    1,
                    gettext(
                        "the header lacks the column(s) %(columns)s (payout_id,status,reason)",
                        columns=", ".join(missing),
                    ),
                )
            ]
        )
    reader.fieldnames = header
    rows = []
    for row in reader:
        if None in row:  # more cells than the header has columns
            raise ResultFileError([(reader.line_num, gettext("the line has more cells than the header"))])
        rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items()}))
    if not rows:
        raise ResultFileError([(2, gettext("the file has a header but no results"))])
    return rows


def import_results(tenant_id: uuid.UUID, filename: str, data: bytes, actor: Actor) -> ImportOutcome:
    """Apply a bank result file, all or nothing (commits). Raises ResultFileError naming each bad
    line (nothing is imported then)."""
    fingerprint = hashlib.sha256(data).hexdigest()
    # Two uploads of one file at once: the second waits here, then finds the first's record.
    db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(int(fingerprint[:15], 16))))
    seen = db.session.execute(
        sa.select(PayoutResultFile).where(
            PayoutResultFile.tenant_id == tenant_id, PayoutResultFile.fingerprint == fingerprint
        )
    ).scalar_one_or_none()
    if seen is not None:
        db.session.rollback()
        return ImportOutcome(seen, already_imported=True)
    rows = _read_lines(data)
    ids = [row["payout_id"] for _, row in rows]
    payouts = {
        p.id: p
        for p in db.session.execute(
            sa.select(Payout)
            .where(Payout.tenant_id == tenant_id, Payout.id.in_(ids))
            .order_by(Payout.id)
            .with_for_update()
        ).scalars()
    }
    problems: list[tuple[int, str]] = []
    decided: dict[str, tuple[int, str]] = {}
    for number, row in rows:
        payout_id, status, reason = row["payout_id"], row["status"].lower(), row.get("reason", "")
        payout = payouts.get(payout_id)
        if not payout_id:
            problems.append((number, gettext("payout_id is empty")))
        elif payout is None:
            problems.append((number, gettext("no payout %(payout)s of this tenant", payout=payout_id)))
        elif status not in ("paid", "failed"):
            problems.append(
                (number, gettext("status must be paid or failed, not %(status)s", status=repr(row["status"])))
            )
        elif status == "failed" and not reason:
            problems.append((number, gettext("a failed payout needs the bank's reason")))
        elif payout_id in decided and decided[payout_id][1] != status:
            problems.append(
                (
                    number,
                    gettext(
                        "%(payout)s is also %(status)s on line %(line)s",
                        payout=payout_id,
                        status=decided[payout_id][1],
                        line=decided[payout_id][0],
                    ),
                )
            )
        elif payout.status in ("paid", "failed") and payout.status != status:
            problems.append(
                (
                    number,
                    gettext(
                        "%(payout)s is already %(status)s; the bank cannot change that",
                        payout=payout_id,
                        status=payout.status,
                    ),
                )
            )
        elif payout.status not in ("in_transit", "paid", "failed"):
            problems.append(
                (
                    number,
                    gettext(
                        "%(payout)s was never sent to the bank (it is %(status)s)",
                        payout=payout_id,
                        status=payout.status,
                    ),
                )
            )
        else:
            decided.setdefault(payout_id, (number, status))
        if len(problems) >= MAX_ERRORS:
            break
    if problems:
        db.session.rollback()
        raise ResultFileError(problems)

    now = _now()
    record = PayoutResultFile(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        fingerprint=fingerprint,
        filename=(filename or "results.csv")[:255],
        lines=len(rows),
        paid=0,
        failed=0,
        unchanged=0,
        uploaded_by=actor.email,
    )
    outcome = ImportOutcome(record)
    by_line = dict(rows)
    reasons = {
        payout_id: (by_line[number].get("reason", ""), by_line[number].get("code", ""))
        for payout_id, (number, _) in decided.items()
    }
    for payout_id, (_, status) in decided.items():
        payout = payouts[payout_id]
        if payout.status != "in_transit":
            record.unchanged += 1
            continue
        outcome.batches.add(payout.batch_id)
        if status == "paid":
            _paid(payout, now)
            record.paid += 1
        else:
            reason, code = reasons[payout_id]
            _failed(payout, now, reason, code or "bank_rejected")
            record.failed += 1
    db.session.add(record)
    db.session.flush()
    for batch_id in outcome.batches:
        _recount(tenant_id, batch_id)
    audit.record(
        tenant_id,
        actor,
        "payout_results.imported",
        "payout_result_file",
        record.id,
        audit.created(filename=record.filename, paid=record.paid, failed=record.failed, unchanged=record.unchanged),
    )
    db.session.commit()
    return outcome


def _paid(payout: Payout, now: datetime) -> None:
    in_transit = ledger.account_ref(payout.tenant_id, "payouts_in_transit", payout.currency, payout.livemode)
    bank = ledger.account_ref(payout.tenant_id, "bank", payout.currency, payout.livemode)
    ledger.post(
        payout.tenant_id,
        "payout.paid",
        payout.id,
        [(in_transit, payout.amount), (bank, -payout.amount)],
        payout.livemode,
        description=f"{payout.id} paid by the bank",
    )
    payout.status, payout.paid_at = "paid", now
    db.session.flush()
    events.record(payout.tenant_id, payout.merchant_id, payout.livemode, "payout.paid", payout_object(payout))


def _failed(payout: Payout, now: datetime, reason: str, code: str) -> None:
    """Back to the merchant's available balance at once, with a balance transaction and an event."""
    in_transit = ledger.account_ref(payout.tenant_id, "payouts_in_transit", payout.currency, payout.livemode)
    available = ledger.account_ref(
        payout.tenant_id, "merchant_available", payout.currency, payout.livemode, payout.merchant_id
    )
    ledger.post(
        payout.tenant_id,
        "payout.failed",
        payout.id,
        [(in_transit, payout.amount), (available, -payout.amount)],
        payout.livemode,
        description=f"{payout.id} failed at the bank: returned",
    )
    payout.status, payout.failed_at = "failed", now
    payout.failure_code, payout.failure_message = code[:60], reason[:500]
    balance_transactions.record(
        payout.tenant_id,
        payout.merchant_id,
        payout.livemode,
        "payout_failure",
        payout.amount,
        payout.currency,
        payout.id,
        description=f"Payout {payout.id} failed: {reason}"[:1000],
    )
    db.session.flush()
    events.record(payout.tenant_id, payout.merchant_id, payout.livemode, "payout.failed", payout_object(payout))


def _recount(tenant_id: uuid.UUID, batch_id: uuid.UUID) -> None:
    counts = dict(
        db.session.execute(
            sa.select(Payout.status, sa.func.count())
            .where(Payout.tenant_id == tenant_id, Payout.batch_id == batch_id)
            .group_by(Payout.status)
        ).all()
    )
    batch = db.session.get(PayoutBatch, (tenant_id, batch_id))
    batch.paid_count, batch.failed_count = counts.get("paid", 0), counts.get("failed", 0)
