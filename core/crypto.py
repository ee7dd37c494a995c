"""Secrets at rest: channel credentials and webhook secrets are stored encrypted (Fernet:
AES-128-CBC + HMAC-SHA256, from `cryptography`).

Keys come from `PAYPLAT_ENCRYPTION_KEYS` (comma-separated Fernet keys, newest first): the first
encrypts, all decrypt, so a key can be rotated by putting a new one in front and re-encrypting.
Development derives a key from the secret key; production must set its own.

`ENCRYPTED_COLUMNS` is the one list of every column that holds such ciphertext; `flask keys rotate`
(`rotate`) re-encrypts exactly these under the newest key, batch by batch, while the app keeps
running. A new encrypted column goes into that list (tests/test_key_rotation.py fails otherwise).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_box: MultiFernet | None = None
_newest: Fernet | None = None
_keys: list[str] = []


def configured_keys() -> list[str]:
    """The keys in use, newest first (the process-wide configuration `create_app` sets)."""
    return list(_keys)


class SecretsNotConfigured(RuntimeError):
    pass


def derived_key(secret_key: str) -> str:
    """A Fernet key derived from the app's secret key (development only)."""
    digest = hashlib.sha256(b"payplat-secrets-v1|" + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


def generate_key() -> str:
    return Fernet.generate_key().decode()


def configure(keys: list[str]) -> None:
    global _box, _newest
    if not keys:
        raise SecretsNotConfigured("no encryption key: set PAYPLAT_ENCRYPTION_KEYS")
    try:
        fernets = [Fernet(key.strip().encode()) for key in keys]
        _box, _newest = MultiFernet(fernets), fernets[0]
        _keys[:] = [key.strip() for key in keys]
    except ValueError as exc:
        raise SecretsNotConfigured(
            "PAYPLAT_ENCRYPTION_KEYS holds a value that is not a Fernet key: "
            "create one with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`"
        ) from exc


def _current() -> MultiFernet:
    if _box is None:
        raise SecretsNotConfigured("secrets are not configured: create the app first")
    return _box


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsNotConfigured("a stored secret cannot be decrypted with the configured keys") from exc


def encrypt_bytes(data: bytes) -> bytes:
    """A file's content as stored (a Fernet token, under the newest key)."""
    return _current().encrypt(data)


def is_encrypted_file(stored: bytes) -> bool:
    """Whether `stored` is a token: every Fernet token starts with its version byte, 0x80 -> 'gAAAAA'.
    No PDF, PNG or JPEG does; files written before files were encrypted are kept as they came."""
    return stored.startswith(b"gAAAAA")


def decrypt_bytes(stored: bytes) -> bytes:
    """A stored file's content: decrypted, or as it is when it was written before encryption."""
    if not is_encrypted_file(stored):
        return stored
    try:
        return _current().decrypt(stored)
    except InvalidToken as exc:
        raise SecretsNotConfigured("a stored file cannot be decrypted with the configured keys") from exc


def rotate_bytes(stored: bytes) -> bytes | None:
    """The content re-encrypted under the newest key (encrypted when it was not); None when it already is.
    Raises InvalidToken when no configured key opens it."""
    if not is_encrypted_file(stored):
        return encrypt_bytes(stored)
    if is_current(stored.decode("ascii")):
        return None
    return _current().rotate(stored)


def mask(value: str, keep: int = 4) -> str:
    """'sk_test_51Habcdef0123' -> 'sk_test_…0123': enough to recognise, never enough to use."""
    if not value:
        return ""
    prefix = value[: value.rfind("_") + 1] if "_" in value[:12] else ""
    return f"{prefix}…{value[-keep:]}" if len(value) > keep + len(prefix) else "…"


# --- the encrypted columns and their rotation ---------------------------------------------------


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding Fernet tokens; with `json_path`, a JSON column holding one at that path."""

    table: str
    column: str
    json_path: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}" + "".join(f"[{part}]" for part in self.json_path)


# Every column that holds ciphertext of this module. `flask keys rotate` re-encrypts these and no others.
ENCRYPTED_COLUMNS: tuple[EncryptedColumn, ...] = (
    EncryptedColumn("channel_accounts", "credentials_encrypted"),  # channel credentials and webhook secrets
    EncryptedColumn("webhook_endpoints", "secret_encrypted"),  # merchants' endpoint signing secrets
    EncryptedColumn("merchant_bank_accounts", "account_encrypted"),  # where payouts go
    EncryptedColumn("payout_batch_lines", "account_encrypted"),  # the same, as a batch was cut
    EncryptedColumn("clearing_settings", "debtor_iban_encrypted"),  # the tenant's account payouts leave from
    EncryptedColumn("users", "totp_secret"),  # two-factor sign-in: the authenticator's shared secret
    EncryptedColumn("platform_users", "totp_secret"),
    # The replayable answer that created a webhook endpoint keeps its shown-once secret sealed.
    EncryptedColumn("idempotency_keys", "response_body", ("secret", "encrypted")),
)


@dataclass
class RotationReport:
    """What `rotate` did to one column."""

    column: EncryptedColumn
    rows: int = 0  # values seen
    rotated: int = 0  # re-encrypted under the newest key
    current: int = 0  # already under the newest key
    changed: int = 0  # rewritten by the app meanwhile (so already under the newest key)
    failed: list[str] = field(default_factory=list)  # the keys of rows no configured key decrypts
    label: str = ""  # what the report names, when not the column (files)

    @property
    def name(self) -> str:
        return self.label or self.column.name

    def summary(self) -> str:
        line = (
            f"{self.name}: {self.rows} value(s), {self.rotated} re-encrypted, "
            f"{self.current} already under the newest key"
        )
        if self.changed:
            line += f", {self.changed} changed meanwhile"
        if self.failed:
            line += f", {len(self.failed)} cannot be decrypted"
        return line


def is_current(token: str) -> bool:
    """Whether `token` is encrypted under the newest key."""
    if _newest is None:
        raise SecretsNotConfigured("secrets are not configured: create the app first")
    try:
        _newest.decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def _quoted(session, name: str) -> str:
    return session.get_bind().dialect.identifier_preparer.quote(name)


def rotate(
    session,
    *,
    batch_size: int = 500,
    columns: tuple[EncryptedColumn, ...] = ENCRYPTED_COLUMNS,
    progress: Callable[[RotationReport], None] | None = None,
) -> list[RotationReport]:
    """Re-encrypt every value of `columns` under the newest key, `batch_size` rows per committed
    transaction, so no lock is held for long and the app keeps running (it decrypts old and new
    tokens alike while the old keys stay configured). A value already under the newest key is left
    alone, so a second run, or one resumed after an interruption, only finishes the rest. A value
    the app rewrote meanwhile is never overwritten (each update names the token it replaces).

    The caller gives a session that sees every tenant's rows (the platform scope)."""
    box = _current()
    reports = []
    for column in columns:
        report = RotationReport(column)
        reports.append(report)
        table = _quoted(session, column.table)
        keys = sa.inspect(session.connection()).get_pk_constraint(column.table)["constrained_columns"]
        key_list = ", ".join(_quoted(session, key) for key in keys)
        value = _quoted(session, column.column)
        if column.json_path:
            path = "'{" + ",".join(column.json_path) + "}'"
            token_sql = f"{value} #>> {path}"
            new_sql = f"jsonb_set({value}, {path}, to_jsonb(CAST(:new AS text)))"
        else:
            token_sql, new_sql = value, ":new"
        params = ", ".join(f":k{i}" for i in range(len(keys)))
        same_row = " AND ".join(f"{_quoted(session, key)} = :k{i}" for i, key in enumerate(keys))
        update = sa.text(f"UPDATE {table} SET {value} = {new_sql} WHERE {same_row} AND {token_sql} = :old")
        last: tuple | None = None
        while True:
            after = f" AND ({key_list}) > ({params})" if last is not None else ""
            rows = session.execute(
                sa.text(
                    f"SELECT {key_list}, {token_sql} AS token FROM {table} WHERE {token_sql} IS NOT NULL{after} "
                    f"ORDER BY {key_list} LIMIT :limit"
                ),
                {"limit": batch_size, **({f"k{i}": v for i, v in enumerate(last)} if last else {})},
            ).all()
            if not rows:
                session.commit()
                break
            for row in rows:
                row_key, token = tuple(row[: len(keys)]), row.token
                report.rows += 1
                if is_current(token):
                    report.current += 1
                    continue
                try:
                    fresh = box.rotate(token.encode()).decode()
                except InvalidToken:
                    report.failed.append(", ".join(f"{k}={v}" for k, v in zip(keys, row_key, strict=True)))
                    continue
                bound = {f"k{i}": v for i, v in enumerate(row_key)}
                if session.execute(update, {**bound, "new": fresh, "old": token}).rowcount:
                    report.rotated += 1
                else:
                    report.changed += 1
            session.commit()
            last = tuple(rows[-1][: len(keys)])
            if progress is not None:
                progress(report)
    return reports
