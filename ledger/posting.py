"""Posting journal entries, reading balances, checking the books.

Every function works in the caller's session and transaction (`db.session`) and never commits:
the use case that changes state posts its money movement and commits both together, or neither.

Concurrency
-----------
- `account()` is get-or-create with `INSERT ... ON CONFLICT DO NOTHING` and a `SELECT`, so two
  transactions creating the same account both end up with the one row.
- `post()` locks every account it touches with `SELECT ... FOR UPDATE` ordered by id before
  writing anything, so two postings over the same accounts in any order queue up instead of
  deadlocking, and the cached balances are updated under that lock.
- A repeated (kind, reference) raises `AlreadyPosted` (see there for why it raises).
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, attributes
from sqlalchemy.orm.util import identity_key

from core.db import db
from ledger.models import MERCHANT_PURPOSES, NORMAL_SIDE, PURPOSES, JournalEntry, JournalLine, LedgerAccount
from tenants.isolation import current_tenant_id, in_platform_scope

BIGINT_MAX = 2**63 - 1
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class LedgerError(Exception):
    """Base of the ledger's errors; raised before anything is written."""


class InvalidEntry(LedgerError):
    """The entry or account request is malformed (types, zero amounts, accounts, modes)."""


class UnbalancedEntry(InvalidEntry):
    """The lines do not sum to zero in some currency."""


class AlreadyPosted(LedgerError):
    """This (kind, reference) is already in the journal of this tenant.

    Raised rather than returning the existing entry on purpose: a repeat means two use cases
    believed they were first to change the same business object. Raising makes the loser roll
    back its own state change with it; returning the first entry would let it commit a state
    change whose money movement was never posted. A caller that knows a repeat is harmless
    (a retried job) catches it; `entry_id` names the entry already there. Nothing was written,
    and the transaction is still usable.
    """

    def __init__(self, tenant_id: uuid.UUID, kind: str, reference: str, entry_id: uuid.UUID | None):
        super().__init__(f"{kind} {reference} is already posted for tenant {tenant_id} (entry {entry_id})")
        self.tenant_id = tenant_id
        self.kind = kind
        self.reference = reference
        self.entry_id = entry_id


Line = tuple[Any, int] | tuple[Any, int, str]


def _session() -> Session:
    return db.session()


def _require_tenant(tenant_id: uuid.UUID) -> None:
    # RLS would refuse silently (no rows) or with a policy error; say what is wrong instead.
    if not isinstance(tenant_id, uuid.UUID):
        raise InvalidEntry(f"tenant_id must be a UUID, not {tenant_id!r}")
    if not in_platform_scope() and current_tenant_id() != tenant_id:
        raise InvalidEntry(f"ledger called for tenant {tenant_id} while the context is tenant {current_tenant_id()}")


# --- accounts ----------------------------------------------------------------------------------


def account(
    tenant_id: uuid.UUID,
    purpose: str,
    currency: str,
    livemode: bool,
    merchant_id: uuid.UUID | None = None,
) -> LedgerAccount:
    """The tenant's account for (merchant, purpose, currency, livemode), created on first use."""
    _require_tenant(tenant_id)
    if purpose not in PURPOSES:
        raise InvalidEntry(f"unknown account purpose {purpose!r}; one of {', '.join(PURPOSES)}")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise InvalidEntry(f"currency must be an upper-case ISO 4217 code like 'EUR', not {currency!r}")
    if not isinstance(livemode, bool):
        raise InvalidEntry(f"livemode must be True or False, not {livemode!r}")
    if purpose in MERCHANT_PURPOSES and merchant_id is None:
        raise InvalidEntry(f"a {purpose} account belongs to a merchant: merchant_id is required")

    session = _session()
    values = {
        "tenant_id": tenant_id,
        "id": uuid.uuid4(),
        "merchant_id": merchant_id,
        "purpose": purpose,
        "currency": currency,
        "livemode": livemode,
        "balance": 0,
    }
    session.execute(
        pg_insert(LedgerAccount).values(values).on_conflict_do_nothing(constraint="uq_ledger_accounts_identity")
    )
    # Read committed: this statement sees the row whether we inserted it or a concurrent
    # transaction did (the INSERT above waited for that one to commit).
    merchant_match = (
        LedgerAccount.merchant_id.is_(None) if merchant_id is None else LedgerAccount.merchant_id == merchant_id
    )
    return session.execute(
        sa.select(LedgerAccount).where(
            LedgerAccount.tenant_id == tenant_id,
            merchant_match,
            LedgerAccount.purpose == purpose,
            LedgerAccount.currency == currency,
            LedgerAccount.livemode == livemode,
        )
    ).scalar_one()


@dataclass(frozen=True)
class AccountRef:
    """An account known by its identity and id, without a database row in hand: what `post()`
    needs of an account. `account_ref()` hands these out from a per-process cache."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    purpose: str
    currency: str
    livemode: bool
    merchant_id: uuid.UUID | None = None


# (tenant, merchant, purpose, currency, livemode) -> AccountRef. Accounts are never deleted and
# their identity never changes, so an id once read stays right; `post()` re-resolves an id it
# cannot find (a database reset under a long-lived process) instead of failing.
_REFS: dict[tuple, AccountRef] = {}
_REFS_LIMIT = 100_000


def account_ref(
    tenant_id: uuid.UUID,
    purpose: str,
    currency: str,
    livemode: bool,
    merchant_id: uuid.UUID | None = None,
) -> AccountRef:
    """Like `account()`, but from the process's cache after the first call: no statement at all
    for an account already seen. For posting; read balances with `account()`."""
    _require_tenant(tenant_id)
    identity = (tenant_id, merchant_id, purpose, currency, livemode)
    ref = _REFS.get(identity)
    if ref is None:
        row = account(tenant_id, purpose, currency, livemode, merchant_id)
        ref = AccountRef(row.tenant_id, row.id, row.purpose, row.currency, row.livemode, row.merchant_id)
        if len(_REFS) >= _REFS_LIMIT:
            _REFS.clear()
        _REFS[identity] = ref
    return ref


def _forget_refs(ids: set[uuid.UUID]) -> None:
    for identity, ref in list(_REFS.items()):
        if ref.id in ids:
            _REFS.pop(identity, None)


def balance(account: LedgerAccount) -> int:
    """The account's balance as stored, debit positive (see the sign convention in ledger.models)."""
    value = (
        _session()
        .execute(
            sa.select(LedgerAccount.balance).where(
                LedgerAccount.tenant_id == account.tenant_id, LedgerAccount.id == account.id
            )
        )
        .scalar_one()
    )
    attributes.set_committed_value(account, "balance", value)
    return value


def natural_balance(account: LedgerAccount) -> int:
    """The balance signed so that the account's normal side is positive."""
    return balance(account) * NORMAL_SIDE[account.purpose]


def merchant_balance(account: LedgerAccount) -> int:
    """What the merchant sees on one of its balances: money owed to it is positive."""
    if account.merchant_id is None or NORMAL_SIDE[account.purpose] != -1:
        raise InvalidEntry(f"{account.purpose} account {account.id} is not a merchant's balance")
    return -balance(account)


# --- posting -----------------------------------------------------------------------------------

AnyAccount = LedgerAccount | AccountRef


def _unpack(line) -> tuple[AnyAccount, int, str | None]:
    if not isinstance(line, tuple) or len(line) not in (2, 3):
        raise InvalidEntry(f"a line is (account, amount) or (account, amount, currency), not {line!r}")
    if len(line) == 2:
        return line[0], line[1], None
    return line


def _validate(tenant_id: uuid.UUID, lines: Sequence[Line], livemode: bool) -> list[tuple[AnyAccount, int, str]]:
    """Everything that can be checked without the database; raises before any SQL runs."""
    if len(lines) < 2:
        raise InvalidEntry(f"an entry needs at least two lines, got {len(lines)}")
    checked = []
    for number, line in enumerate(lines, start=1):
        acct, amount, currency = _unpack(line)
        if not isinstance(acct, LedgerAccount | AccountRef):
            raise InvalidEntry(f"line {number}: {acct!r} is not a LedgerAccount")
        # bool is an int subclass and Decimal/float are not minor units: accept exactly int.
        if type(amount) is not int:
            raise InvalidEntry(
                f"line {number}: amount {amount!r} is a {type(amount).__name__}; amounts are integers in minor units"
            )
        if amount == 0:
            raise InvalidEntry(f"line {number}: amount is zero on {acct.purpose} account {acct.id}")
        if abs(amount) > BIGINT_MAX:
            raise InvalidEntry(f"line {number}: amount {amount} does not fit in a 64-bit integer")
        if acct.tenant_id != tenant_id:
            raise InvalidEntry(f"line {number}: account {acct.id} belongs to tenant {acct.tenant_id}, not {tenant_id}")
        if acct.livemode != livemode:
            raise InvalidEntry(
                f"line {number}: account {acct.id} is {'live' if acct.livemode else 'test'} mode but the entry is"
                f" {'live' if livemode else 'test'} mode; test and live money never mix"
            )
        if currency is not None and currency != acct.currency:
            raise InvalidEntry(f"line {number}: currency {currency!r} differs from account {acct.id}'s {acct.currency}")
        checked.append((acct, amount, acct.currency))
    _require_balanced(checked)
    return checked


def _require_balanced(lines: Sequence[tuple[AnyAccount, int, str]]) -> None:
    totals: dict[str, int] = defaultdict(int)
    for _, amount, currency in lines:
        totals[currency] += amount
    off = {currency: total for currency, total in sorted(totals.items()) if total != 0}
    if off:
        detail = ", ".join(
            f"{currency} {'debits' if t > 0 else 'credits'} exceed by {abs(t)}" for currency, t in off.items()
        )
        raise UnbalancedEntry(f"entry does not balance: {detail}")


_ACCOUNTS = LedgerAccount.__table__
_ENTRIES = JournalEntry.__table__
_LINES = JournalLine.__table__

# The entry, its lines and the balances in one statement (the accounts are already locked). When
# (kind, reference) exists, the entry's insert returns nothing, so nothing else is written and the
# statement returns no row.
_WRITE_ENTRY = sa.text(
    """
    WITH entry AS (
        INSERT INTO journal_entries (tenant_id, id, kind, reference, livemode, description)
        VALUES (:tenant_id, :entry_id, :kind, :reference, :livemode, :description)
        ON CONFLICT ON CONSTRAINT uq_journal_entries_tenant_id_kind_reference DO NOTHING
        RETURNING tenant_id, id
    ), lines AS (
        INSERT INTO journal_lines (tenant_id, id, entry_id, account_id, amount, currency)
        SELECT entry.tenant_id, line.id, entry.id, line.account_id, line.amount, line.currency
        FROM entry, unnest(
            CAST(:line_ids AS uuid[]), CAST(:account_ids AS uuid[]),
            CAST(:amounts AS bigint[]), CAST(:currencies AS text[])
        ) AS line(id, account_id, amount, currency)
        RETURNING tenant_id, account_id, amount
    ), moved AS (
        UPDATE ledger_accounts AS account SET balance = account.balance + move.delta
        FROM (SELECT tenant_id, account_id, sum(amount) AS delta FROM lines GROUP BY tenant_id, account_id) AS move
        WHERE account.tenant_id = move.tenant_id AND account.id = move.account_id
    )
    SELECT id FROM entry
    """
)


# Ordered by id so that every posting takes its locks in the same global order. Built once.
_LOCK_ACCOUNTS = (
    sa.select(_ACCOUNTS.c.id, _ACCOUNTS.c.livemode, _ACCOUNTS.c.currency, _ACCOUNTS.c.balance)
    .where(
        _ACCOUNTS.c.tenant_id == sa.bindparam("tenant_id"),
        _ACCOUNTS.c.id == sa.func.any(sa.bindparam("ids", type_=sa.ARRAY(sa.Uuid))),
    )
    .order_by(_ACCOUNTS.c.id)
    .with_for_update()
)


def _lock_accounts(session: Session, tenant_id: uuid.UUID, ids: set[uuid.UUID]) -> dict[uuid.UUID, sa.Row]:
    # Core statements go straight to the transaction's connection: nothing for the ORM to do.
    rows = session.connection().execute(_LOCK_ACCOUNTS, {"tenant_id": tenant_id, "ids": sorted(ids)}).all()
    return {row.id: row for row in rows}


def _resolve_missing(tenant_id: uuid.UUID, checked: list, locked: dict) -> list:
    """Account refs whose id is gone from the database (reset under this process) are looked up again."""
    stale = {acct.id for acct, _, _ in checked if isinstance(acct, AccountRef) and acct.id not in locked}
    if not stale:
        return checked
    _forget_refs(stale)
    return [
        (
            account_ref(tenant_id, acct.purpose, acct.currency, acct.livemode, acct.merchant_id)
            if acct.id in stale
            else acct,
            amount,
            currency,
        )
        for acct, amount, currency in checked
    ]


def post(
    tenant_id: uuid.UUID,
    kind: str,
    reference: str,
    lines: Sequence[Line],
    livemode: bool,
    description: str = "",
) -> PostedEntry:
    """Write one balanced journal entry and move the cached balances, in the caller's transaction.

    `lines` are `(account, amount)` (or `(account, amount, currency)` to assert the currency),
    amounts signed debit-positive; an account is a `LedgerAccount` or an `AccountRef`. Raises
    `InvalidEntry`/`UnbalancedEntry` naming the problem, or `AlreadyPosted`; in every refusal
    nothing has been written.

    Four statements whatever the number of lines: lock the accounts (by id), insert the entry,
    insert every line, update every balance.
    """
    _require_tenant(tenant_id)
    for name, value, limit in (("kind", kind, 80), ("reference", reference, 200)):
        if not isinstance(value, str) or not value or len(value) > limit:
            raise InvalidEntry(f"{name} must be a non-empty string of at most {limit} characters, not {value!r}")
    if not isinstance(livemode, bool):
        raise InvalidEntry(f"livemode must be True or False, not {livemode!r}")
    checked = _validate(tenant_id, lines, livemode)

    session = _session()
    locked = _lock_accounts(session, tenant_id, {acct.id for acct, _, _ in checked})
    if any(acct.id not in locked for acct, _, _ in checked):
        checked = _resolve_missing(tenant_id, checked, locked)
        locked = _lock_accounts(session, tenant_id, {acct.id for acct, _, _ in checked})
    # The caller's objects may be stale or hand-made: judge again by the locked rows.
    for number, (acct, _, currency) in enumerate(checked, start=1):
        row = locked.get(acct.id)
        if row is None:
            raise InvalidEntry(f"line {number}: account {acct.id} does not exist for tenant {tenant_id}")
        if row.livemode != livemode or row.currency != currency:
            raise InvalidEntry(
                f"line {number}: account {acct.id} is {row.currency} {'live' if row.livemode else 'test'} mode,"
                f" the line says {currency} {'live' if livemode else 'test'} mode"
            )

    entry_id = uuid.uuid4()
    values = [
        {
            "tenant_id": tenant_id,
            "id": uuid.uuid4(),
            "entry_id": entry_id,
            "account_id": acct.id,
            "amount": amount,
            "currency": currency,
        }
        for acct, amount, currency in checked
    ]
    written = (
        session.connection()
        .execute(
            _WRITE_ENTRY,
            {
                "tenant_id": tenant_id,
                "entry_id": entry_id,
                "kind": kind,
                "reference": reference,
                "livemode": livemode,
                "description": description,
                "line_ids": [v["id"] for v in values],
                "account_ids": [v["account_id"] for v in values],
                "amounts": [v["amount"] for v in values],
                "currencies": [v["currency"] for v in values],
            },
        )
        .scalar_one_or_none()
    )
    if written is None:
        existing = session.execute(
            sa.select(_ENTRIES.c.id).where(
                _ENTRIES.c.tenant_id == tenant_id, _ENTRIES.c.kind == kind, _ENTRIES.c.reference == reference
            )
        ).scalar_one_or_none()
        raise AlreadyPosted(tenant_id, kind, reference, existing)

    deltas: dict[uuid.UUID, int] = defaultdict(int)
    for acct, amount, _ in checked:
        deltas[acct.id] += amount
    balances = {account_id: locked[account_id].balance + delta for account_id, delta in deltas.items()}
    # Keep the caller's account objects (and any copy in the session) true to the new balances.
    for account_id, new_balance in balances.items():
        loaded = session.identity_map.get(identity_key(LedgerAccount, (tenant_id, account_id)))
        if loaded is not None:
            attributes.set_committed_value(loaded, "balance", new_balance)
    for acct, _, _ in checked:
        if isinstance(acct, LedgerAccount):
            attributes.set_committed_value(acct, "balance", balances[acct.id])

    return PostedEntry(tenant_id, entry_id, kind, reference, livemode, description)


@dataclass(frozen=True)
class PostedEntry:
    """What `post` wrote, without building ORM objects for it on the payment path (most callers
    only need that it was written); `lines` loads them when asked, largest debit first."""

    tenant_id: uuid.UUID
    id: uuid.UUID
    kind: str
    reference: str
    livemode: bool
    description: str

    @property
    def lines(self) -> list[JournalLine]:
        entry = _session().get(JournalEntry, (self.tenant_id, self.id))
        return sorted(entry.lines, key=lambda line: -line.amount)


def find_entry(tenant_id: uuid.UUID, kind: str, reference: str) -> JournalEntry | None:
    """The entry posted for (kind, reference), if any."""
    _require_tenant(tenant_id)
    return (
        _session()
        .execute(
            sa.select(JournalEntry).where(
                JournalEntry.tenant_id == tenant_id, JournalEntry.kind == kind, JournalEntry.reference == reference
            )
        )
        .scalar_one_or_none()
    )


# --- checking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One inconsistency found by `check()`, naming the tenant and the entry or account."""

    kind: str
    tenant_id: uuid.UUID
    message: str
    entry_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None

    def __str__(self) -> str:
        return f"{self.kind}: tenant {self.tenant_id}: {self.message}"


_UNBALANCED = sa.text(
    """
    SELECT tenant_id, entry_id, currency, sum(amount) AS total
    FROM journal_lines
    GROUP BY tenant_id, entry_id, currency
    HAVING sum(amount) <> 0
    ORDER BY tenant_id, entry_id, currency
    """
)
_TOO_FEW_LINES = sa.text(
    """
    SELECT e.tenant_id, e.id, e.kind, e.reference, count(l.id) AS lines
    FROM journal_entries e
    LEFT JOIN journal_lines l ON l.tenant_id = e.tenant_id AND l.entry_id = e.id
    GROUP BY e.tenant_id, e.id, e.kind, e.reference
    HAVING count(l.id) < 2
    ORDER BY e.tenant_id, e.id
    """
)
_MIXED_MODES = sa.text(
    """
    SELECT DISTINCT e.tenant_id, e.id, e.kind, e.reference, a.id AS account_id
    FROM journal_lines l
    JOIN journal_entries e ON e.tenant_id = l.tenant_id AND e.id = l.entry_id
    JOIN ledger_accounts a ON a.tenant_id = l.tenant_id AND a.id = l.account_id
    WHERE a.livemode <> e.livemode
    ORDER BY e.tenant_id, e.id
    """
)
_STALE_BALANCES = sa.text(
    """
    SELECT a.tenant_id, a.id, a.purpose, a.currency, a.merchant_id, a.balance, coalesce(s.total, 0) AS total
    FROM ledger_accounts a
    LEFT JOIN (
        SELECT tenant_id, account_id, sum(amount) AS total
        FROM journal_lines
        GROUP BY tenant_id, account_id
    ) s ON s.tenant_id = a.tenant_id AND s.account_id = a.id
    WHERE a.balance <> coalesce(s.total, 0)
    ORDER BY a.tenant_id, a.id
    """
)


def check(session: Session) -> list[Problem]:
    """Every inconsistency the session can see, found with a few set-based queries.

    Sees what RLS lets it see: inside `platform_scope()` (as `flask ledger check` runs it) that
    is every tenant; in a tenant's context, that tenant's books only.
    """
    problems: list[Problem] = []
    for tenant_id, entry_id, currency, total in session.execute(_UNBALANCED):
        side = "debits" if total > 0 else "credits"
        problems.append(
            Problem(
                "unbalanced_entry",
                tenant_id,
                f"entry {entry_id} does not balance in {currency}: {side} exceed by {abs(int(total))}",
                entry_id=entry_id,
            )
        )
    for tenant_id, entry_id, kind, reference, count in session.execute(_TOO_FEW_LINES):
        problems.append(
            Problem(
                "too_few_lines",
                tenant_id,
                f"entry {entry_id} ({kind} {reference}) has {count} line(s); at least two are required",
                entry_id=entry_id,
            )
        )
    for tenant_id, entry_id, kind, reference, account_id in session.execute(_MIXED_MODES):
        problems.append(
            Problem(
                "mixed_livemode",
                tenant_id,
                f"entry {entry_id} ({kind} {reference}) has a line on account {account_id} of the other mode",
                entry_id=entry_id,
                account_id=account_id,
            )
        )
    for tenant_id, account_id, purpose, currency, merchant_id, cached, total in session.execute(_STALE_BALANCES):
        owner = f" of merchant {merchant_id}" if merchant_id else ""
        problems.append(
            Problem(
                "balance_mismatch",
                tenant_id,
                f"account {account_id} ({purpose} {currency}{owner}) caches balance {cached}"
                f" but its lines sum to {int(total)}",
                account_id=account_id,
            )
        )
    return problems


def counts(session: Session) -> tuple[int, int]:
    """(entries, accounts) visible to the session, for reports."""
    row = session.execute(
        sa.text("SELECT (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM ledger_accounts)")
    ).one()
    return int(row[0]), int(row[1])
