"""Suspense items (挂账): what reconciliation could not explain, and their workflow.

Opening an item posts one entry between the suspense account and the source's account (the
channel's receivable, or the bank): a statement-only line of +X credits suspense by X
(`item.amount = -X`); a platform-only record of X debits it (`+X`); a mismatch books the
difference. Every way out posts the opposite of `item.amount` on suspense against one account:

- matched to a record (the source account: the money was already in the books);
- an adjusting entry to an account the user chooses, with a reason;
- a write-off to `write_offs`, requested by one person and approved by another.

Every step (assign, comment, resolve, request, approve, reject) is audited; items are listed
by age, and `open_by_age` is the report of open suspense by age and amount.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

import ledger
from clearing.models import StatementLine, SuspenseComment, SuspenseItem
from core.db import db
from core.i18n import gettext
from core.money import format_amount
from payments.models import PaymentIntent, Payout, Refund
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput

ADJUSTMENT_PURPOSES = ("channel_receivable", "bank", "channel_fees", "tenant_revenue")
AGE_BUCKETS = ((0, 7, "0–7 days"), (8, 30, "8–30 days"), (31, 90, "31–90 days"), (91, None, "over 90 days"))
OPEN = ("open", "pending_write_off")


def _now() -> datetime:
    return datetime.now(UTC)


def _source_purpose(item: SuspenseItem) -> str:
    return "bank" if item.channel_account_id is None else "channel_receivable"


def _post(item: SuspenseItem, kind: str, counter_purpose: str, suspense_amount: int, description: str) -> None:
    if not suspense_amount:
        return
    suspense_acct = ledger.account_ref(item.tenant_id, "suspense", item.currency, item.livemode)
    counter = ledger.account_ref(item.tenant_id, counter_purpose, item.currency, item.livemode)
    ledger.post(
        item.tenant_id,
        kind,
        str(item.id),
        [(suspense_acct, suspense_amount), (counter, -suspense_amount)],
        item.livemode,
        description=description[:500],
    )


def _open(item: SuspenseItem) -> SuspenseItem:
    db.session.add(item)
    db.session.flush()
    _post(item, "suspense.opened", _source_purpose(item), item.amount, f"{item.kind}: {item.description}")
    return item


def _record_amount(tenant_id: uuid.UUID, record_type: str, record_id: str) -> tuple[int, str] | None:
    """A record's amount as a statement shows it (refunds and payouts negative) and its currency."""
    if record_type == "payment":
        row = db.session.get(PaymentIntent, (tenant_id, record_id))
        return None if row is None else (row.amount_received, row.currency)
    if record_type == "refund":
        row = db.session.get(Refund, (tenant_id, record_id))
        return None if row is None else (-row.amount, row.currency)
    if record_type == "payout":
        row = db.session.get(Payout, (tenant_id, record_id))
        return None if row is None else (-row.amount, row.currency)
    return None


def open_for_import(
    tenant_id: uuid.UUID,
    import_id: uuid.UUID,
    channel_account_id: uuid.UUID | None,
    livemode: bool,
    shorts: list[Any],
) -> dict[str, int]:
    """Items for an import's unexplained lines and records, and resolution of shorts now matched
    (in the caller's transaction)."""
    base = {"tenant_id": tenant_id, "livemode": livemode, "channel_account_id": channel_account_id}
    longs = db.session.execute(
        sa.update(StatementLine)
        .where(
            StatementLine.tenant_id == tenant_id,
            StatementLine.import_id == import_id,
            StatementLine.status == "unmatched",
        )
        .values(status="long")
        .returning(StatementLine.id, StatementLine.amount, StatementLine.currency, StatementLine.reference)
    ).all()
    for line_id, amount, currency, reference in longs:
        _open(
            SuspenseItem(
                **base,
                id=uuid.uuid4(),
                kind="long",
                amount=-amount,
                currency=currency,
                statement_line_id=line_id,
                description=f"on the statement only: {format_amount(amount, currency)} {reference or '(no reference)'}",
            )
        )
    mismatches = db.session.execute(
        sa.select(StatementLine).where(
            StatementLine.tenant_id == tenant_id,
            StatementLine.import_id == import_id,
            StatementLine.status == "mismatch",
        )
    ).scalars()
    for line in mismatches:
        expected = _record_amount(tenant_id, line.record_type, line.record_id)
        amount, currency = expected if expected else (0, line.currency)
        same_currency = currency == line.currency
        difference = line.amount - amount if same_currency else 0
        _open(
            SuspenseItem(
                **base,
                id=uuid.uuid4(),
                kind="mismatch",
                amount=-difference,
                currency=line.currency,
                statement_line_id=line.id,
                record_type=line.record_type,
                record_id=line.record_id,
                description=(
                    f"{line.record_type} {line.record_id}: statement {format_amount(line.amount, line.currency)}, "
                    f"platform {format_amount(amount, currency)}"
                ),
            )
        )
    opened_shorts = 0
    for record_type, record_id, amount, currency in shorts:
        exists = db.session.execute(
            sa.select(SuspenseItem.id).where(
                SuspenseItem.tenant_id == tenant_id,
                SuspenseItem.kind == "short",
                SuspenseItem.record_type == record_type,
                SuspenseItem.record_id == record_id,
                SuspenseItem.status.in_(OPEN),
            )
        ).first()
        if exists:
            continue
        _open(
            SuspenseItem(
                **base,
                id=uuid.uuid4(),
                kind="short",
                amount=amount,
                currency=currency,
                record_type=record_type,
                record_id=record_id,
                description=f"{record_type} {record_id} ({format_amount(amount, currency)}) is not on the statement",
            )
        )
        opened_shorts += 1
    # Shorts whose record a line of this import now matched: the money did arrive.
    arrived = db.session.execute(
        sa.select(SuspenseItem)
        .join(
            StatementLine,
            sa.and_(
                StatementLine.tenant_id == SuspenseItem.tenant_id,
                StatementLine.record_type == SuspenseItem.record_type,
                StatementLine.record_id == SuspenseItem.record_id,
            ),
        )
        .where(
            SuspenseItem.tenant_id == tenant_id,
            SuspenseItem.kind == "short",
            SuspenseItem.status.in_(OPEN),
            StatementLine.import_id == import_id,
            StatementLine.status == "matched",
        )
    ).scalars()
    resolved = 0
    for item in arrived:
        _resolve(item, "matched", _source_purpose(item), "the record is on a later statement", None)
        resolved += 1
    return {"long": len(longs), "short": opened_shorts, "resolved": resolved}


# --- the workflow ----------------------------------------------------------------------------


def get_item(tenant_id: uuid.UUID, item_id: uuid.UUID, *, lock: bool = False) -> SuspenseItem:
    item = db.session.get(SuspenseItem, (tenant_id, item_id), with_for_update=lock)
    if item is None:
        raise InvalidInput(gettext("That suspense item does not exist."), "item_id")
    return item


def _require_open(item: SuspenseItem) -> None:
    if item.status not in OPEN:
        raise InvalidInput(gettext("This item is already %(status)s.", status=item.status.replace("_", " ")), "status")


def _resolve(item: SuspenseItem, resolution: str, purpose: str, note: str, actor: Actor | None) -> None:
    before = item.status
    _post(item, "suspense.cleared", purpose, -item.amount, f"{resolution}: {note}")
    item.status = "written_off" if resolution == "written_off" else "resolved"
    item.resolution, item.resolution_note = resolution, note[:1000]
    item.resolved_at = _now()
    item.resolved_by = actor.email if actor else None
    db.session.flush()
    audit.record(
        item.tenant_id,
        actor or Actor.system(),
        f"suspense.{resolution}",
        "suspense_item",
        item.id,
        audit.changes({"status": before}, {"status": item.status, "note": note, "account": purpose}),
    )


def assign(tenant_id: uuid.UUID, item_id: uuid.UUID, assignee: str | None, actor: Actor) -> SuspenseItem:
    item = get_item(tenant_id, item_id, lock=True)
    _require_open(item)
    assignee = (assignee or "").strip().lower() or None
    if assignee and ("@" not in assignee or len(assignee) > 320):
        raise InvalidInput(gettext("Assign the item to a person's e-mail address."), "assignee")
    before = item.assignee
    item.assignee = assignee
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "suspense.assigned",
        "suspense_item",
        item.id,
        audit.changes({"assignee": before}, {"assignee": assignee}),
    )
    return item


def add_comment(tenant_id: uuid.UUID, item_id: uuid.UUID, body: str, actor: Actor) -> SuspenseComment:
    item = get_item(tenant_id, item_id)
    body = (body or "").strip()
    if not body or len(body) > 2000:
        raise InvalidInput(gettext("Write a comment of at most 2,000 characters."), "body")
    comment = SuspenseComment(tenant_id=tenant_id, id=uuid.uuid4(), item_id=item.id, author=actor.email, body=body)
    db.session.add(comment)
    db.session.flush()
    audit.record(tenant_id, actor, "suspense.commented", "suspense_item", item.id, audit.created(comment=body[:200]))
    return comment


def comments(tenant_id: uuid.UUID, item_id: uuid.UUID) -> list[SuspenseComment]:
    return list(
        db.session.execute(
            sa.select(SuspenseComment)
            .where(SuspenseComment.tenant_id == tenant_id, SuspenseComment.item_id == item_id)
            .order_by(SuspenseComment.created_at)
        ).scalars()
    )


def _reason(note: str) -> str:
    note = (note or "").strip()
    if not note or len(note) > 1000:
        raise InvalidInput(
            gettext("Give the reason (at most 1,000 characters): it goes into the journal and the audit log."), "note"
        )
    return note


def resolve_by_match(
    tenant_id: uuid.UUID, item_id: uuid.UUID, record_type: str, record_id: str, note: str, actor: Actor
) -> SuspenseItem:
    """The item is this record (already in the books): the opening entry is undone."""
    item = get_item(tenant_id, item_id, lock=True)
    _require_open(item)
    reason = _reason(note)
    record_id = (record_id or "").strip()
    if item.kind == "mismatch":
        raise InvalidInput(
            gettext("A mismatch is already matched to its record: adjust the difference instead."), "record_id"
        )
    record = _record_amount(tenant_id, record_type, record_id)
    if record is None:
        raise InvalidInput(
            gettext("No %(record_type)s %(record_id)s of this tenant.", record_type=record_type, record_id=record_id),
            "record_id",
        )
    amount, currency = record
    if currency != item.currency:
        raise InvalidInput(
            gettext(
                "That %(record_type)s is in %(currency)s, the item in %(item_currency)s.",
                record_type=record_type,
                currency=currency,
                item_currency=item.currency,
            ),
            "record_id",
        )
    # A statement-only line is the record's money (-item.amount); a missing record is the record (item.amount).
    expected = -item.amount if item.kind == "long" else item.amount
    if amount != expected:
        raise InvalidInput(
            gettext(
                "That %(record_type)s is %(amount)s, the item %(expected)s: adjust instead, with the reason.",
                record_type=record_type,
                amount=format_amount(amount, currency),
                expected=format_amount(expected, currency),
            ),
            "record_id",
        )
    if item.kind == "long" and _already_matched(tenant_id, record_type, record_id):
        raise InvalidInput(
            gettext(
                "A statement line already matches %(record_type)s %(record_id)s.",
                record_type=record_type,
                record_id=record_id,
            ),
            "record_id",
        )
    item.record_type, item.record_id = record_type, record_id
    _resolve(item, "matched", _source_purpose(item), f"{record_type} {record_id}: {reason}", actor)
    return item


def _already_matched(tenant_id: uuid.UUID, record_type: str, record_id: str) -> bool:
    return (
        db.session.execute(
            sa.select(StatementLine.id).where(
                StatementLine.tenant_id == tenant_id,
                StatementLine.record_type == record_type,
                StatementLine.record_id == record_id,
                StatementLine.status.in_(("matched", "mismatch")),
            )
        ).first()
        is not None
    )


def resolve_by_adjustment(
    tenant_id: uuid.UUID, item_id: uuid.UUID, purpose: str, note: str, actor: Actor
) -> SuspenseItem:
    item = get_item(tenant_id, item_id, lock=True)
    _require_open(item)
    if purpose not in ADJUSTMENT_PURPOSES:
        raise InvalidInput(
            gettext("Choose the account: %(purposes)s.", purposes=", ".join(ADJUSTMENT_PURPOSES)),
            "purpose",
        )
    _resolve(item, "adjusted", purpose, _reason(note), actor)
    return item


def request_write_off(tenant_id: uuid.UUID, item_id: uuid.UUID, note: str, actor: Actor) -> SuspenseItem:
    item = get_item(tenant_id, item_id, lock=True)
    if item.status != "open":
        raise InvalidInput(
            gettext(
                "This item is %(status)s; only an open item can be written off.", status=item.status.replace("_", " ")
            ),
            "status",
        )
    item.status, item.requested_by, item.resolution_note = "pending_write_off", actor.email, _reason(note)
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "suspense.write_off_requested",
        "suspense_item",
        item.id,
        audit.changes({"status": "open"}, {"status": item.status, "note": item.resolution_note}),
    )
    return item


def approve_write_off(tenant_id: uuid.UUID, item_id: uuid.UUID, actor: Actor) -> SuspenseItem:
    item = get_item(tenant_id, item_id, lock=True)
    if item.status != "pending_write_off":
        raise InvalidInput(gettext("No write-off of this item waits for approval."), "status")
    if not actor.email or actor.email == item.requested_by:
        raise InvalidInput(
            gettext("A write-off needs a second person: someone other than who asked for it approves it."), "status"
        )
    _resolve(
        item, "written_off", "write_offs", f"approved; requested by {item.requested_by}: {item.resolution_note}", actor
    )
    return item


def reject_write_off(tenant_id: uuid.UUID, item_id: uuid.UUID, note: str, actor: Actor) -> SuspenseItem:
    item = get_item(tenant_id, item_id, lock=True)
    if item.status != "pending_write_off":
        raise InvalidInput(gettext("No write-off of this item waits for approval."), "status")
    reason = _reason(note)
    item.status = "open"
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "suspense.write_off_rejected",
        "suspense_item",
        item.id,
        audit.changes({"status": "pending_write_off"}, {"status": "open", "note": reason}),
    )
    return item


def open_by_age(tenant_id: uuid.UUID, now: datetime | None = None) -> list[dict[str, Any]]:
    """Open suspense per currency and age bucket: count and the absolute amount."""
    now = now or _now()
    rows = db.session.execute(
        sa.select(SuspenseItem.currency, SuspenseItem.opened_at, SuspenseItem.amount).where(
            SuspenseItem.tenant_id == tenant_id, SuspenseItem.status.in_(OPEN)
        )
    ).all()
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"count": 0, "amount": 0})
    for currency, opened_at, amount in rows:
        age = (now - opened_at).days
        label = next(lbl for low, high, lbl in AGE_BUCKETS if age >= low and (high is None or age <= high))
        cell = table[(currency, label)]
        cell["count"] += 1
        cell["amount"] += abs(amount)
    order = [lbl for _, _, lbl in AGE_BUCKETS]
    return [
        {"currency": currency, "age": label, **cell}
        for (currency, label), cell in sorted(table.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1])))
    ]
