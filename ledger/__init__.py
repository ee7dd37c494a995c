"""Double-entry accounts, journal entries and balances; knows nothing of payments.

The API (all in the caller's transaction; nothing here commits):

    account(tenant_id, purpose, currency, livemode, merchant_id=None) -> LedgerAccount
    account_ref(...same...) -> AccountRef  the account's id and identity, cached per process (for posting)
    post(tenant_id, kind, reference, lines, livemode, description="") -> PostedEntry
    balance(account) -> int            debit-positive, as stored
    natural_balance(account) -> int    positive on the account's normal side
    merchant_balance(account) -> int   what the merchant sees: money owed to it is positive
    find_entry(tenant_id, kind, reference) -> JournalEntry | None
    check(session) -> list[Problem]    every inconsistency the session can see
    counts(session) -> (entries, accounts)

The sign convention and each purpose's normal side are documented in `ledger.models`.
"""

from ledger.models import NORMAL_SIDE, PURPOSES, JournalEntry, JournalLine, LedgerAccount
from ledger.posting import (
    AccountRef,
    AlreadyPosted,
    InvalidEntry,
    LedgerError,
    Problem,
    UnbalancedEntry,
    account,
    account_ref,
    balance,
    check,
    counts,
    find_entry,
    merchant_balance,
    natural_balance,
    post,
)

__all__ = [
    "NORMAL_SIDE",
    "PURPOSES",
    "AccountRef",
    "AlreadyPosted",
    "InvalidEntry",
    "JournalEntry",
    "JournalLine",
    "LedgerAccount",
    "LedgerError",
    "Problem",
    "UnbalancedEntry",
    "account",
    "account_ref",
    "balance",
    "check",
    "counts",
    "find_entry",
    "merchant_balance",
    "natural_balance",
    "post",
]
