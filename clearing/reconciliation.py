"""Statement reconciliation: a channel's or the bank's statement against the platform's records.

An upload is stored on disk while its SHA-256 is computed (`store_upload`); the same file twice
is refused at once. The import is a `reconciliation` clearing run (`run_import`), and it is one
database transaction, so a file with any bad line imports nothing:

1. the file is read as a stream (`clearing.statement_formats`) and COPied into a temporary
   staging table (memory does not grow with the file; progress is written every few thousand
   lines on a separate connection, for the console's progress bar);
2. one `INSERT ... SELECT ... ON CONFLICT DO NOTHING` moves the staged lines into
   `statement_lines`, skipping lines already imported from an overlapping file (line identity);
3. set-based matching, one statement per rule: by the channel's reference (payments and refunds
   of the channel account; for the bank, payouts by their id, which the bank file carried as the
   end-to-end id), then, for lines without a known reference, by amount, currency and a
   ±3-day window, one record per line;
4. what is left becomes suspense items (`clearing.suspense`), each with its journal entry:
   statement-only lines ("long"), matched lines whose amount or currency differs ("mismatch"),
   and records of the statement's days that no line of any import matched ("short", possible
   loss: logged as a warning and e-mailed to the tenant's admins and finance users). A record
   that was short and is now matched has its item resolved.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from rq import Retry

from clearing import suspense
from clearing.models import ClearingRun, StatementImport, StatementMapping
from clearing.statement_formats import CHANNEL_COLUMNS, FORMATS, ColumnMapping, StatementError, read
from core import queue
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency, to_major
from payments.channel_adapters import adapter_of
from payments.models import ChannelAccount
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput

log = logging.getLogger(__name__)

CHUNK = 1 << 16
PROGRESS_EVERY = 5_000
MATCH_WINDOW_DAYS = 3
MAX_STATEMENT_BYTES = 200 * 1024 * 1024
ALERT_JOB = "portal.alerts.reconciliation_shorts"  # e-mails admins and finance users


def _now() -> datetime:
    return datetime.now(UTC)


def storage_path(upload_dir: Path, tenant_id: uuid.UUID, import_id: uuid.UUID) -> Path:
    """Outside the web root, named by ids only (never by the uploaded file's name)."""
    return Path(upload_dir) / "statements" / str(tenant_id) / f"{import_id}.dat"


# --- mappings ------------------------------------------------------------------------------


def mapping_for(tenant_id: uuid.UUID, channel_account_id: uuid.UUID | None) -> ColumnMapping | None:
    row = db.session.execute(
        sa.select(StatementMapping).where(
            StatementMapping.tenant_id == tenant_id,
            StatementMapping.channel_account_id.is_(None)
            if channel_account_id is None
            else StatementMapping.channel_account_id == channel_account_id,
        )
    ).scalar_one_or_none()
    return None if row is None else ColumnMapping(**row.mapping)


def save_mapping(
    tenant_id: uuid.UUID, channel_account_id: uuid.UUID | None, mapping: ColumnMapping, actor: Actor
) -> None:
    required = {
        "reference": gettext("Name the column that holds the reference."),
        "amount": gettext("Name the column that holds the amount."),
        "date": gettext("Name the column that holds the date."),
    }
    for field_name, message in required.items():
        if not (getattr(mapping, field_name) or "").strip():
            raise InvalidInput(message, field_name)
    if not mapping.currency and not mapping.fixed_currency:
        raise InvalidInput(gettext("Name the currency column, or give the statement's one currency."), "currency")
    if mapping.fixed_currency:
        try:
            normalise_currency(mapping.fixed_currency)
        except MoneyError as exc:
            raise InvalidInput(str(exc), "fixed_currency") from None
    sample = datetime(2026, 3, 31)
    try:
        readable = datetime.strptime(sample.strftime(mapping.date_format), mapping.date_format) == sample
    except ValueError:
        readable = False
    if not readable:
        raise InvalidInput(
            gettext("That date format cannot read a whole date back; write it like %Y-%m-%d."), "date_format"
        )
    if channel_account_id is not None and db.session.get(ChannelAccount, (tenant_id, channel_account_id)) is None:
        raise InvalidInput(gettext("That channel account does not exist."), "channel_account_id")
    row = db.session.execute(
        sa.select(StatementMapping)
        .where(
            StatementMapping.tenant_id == tenant_id,
            StatementMapping.channel_account_id.is_(None)
            if channel_account_id is None
            else StatementMapping.channel_account_id == channel_account_id,
        )
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        row = StatementMapping(tenant_id=tenant_id, channel_account_id=channel_account_id, mapping={})
        db.session.add(row)
    before = dict(row.mapping or {})
    row.mapping, row.updated_at = mapping.to_json(), _now()
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "reconciliation.mapping_saved",
        "channel_account",
        channel_account_id or "bank",
        audit.changes(before, row.mapping),
    )


# --- uploads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    import_: StatementImport
    already_imported: bool


def store_upload(
    tenant_id: uuid.UUID,
    stream: IO[bytes],
    *,
    filename: str,
    fmt: str,
    channel_account_id: uuid.UUID | None,
    livemode: bool | None,
    upload_dir: Path,
    actor: Actor,
    max_bytes: int = MAX_STATEMENT_BYTES,
    fetched: bool = False,
) -> Stored:
    """Write the upload to disk while hashing it, and record the import (queued; commits). The
    same file again returns the first import, with `already_imported`. The `channel` format is
    only what `fetch_statement` writes (`fetched`)."""
    if fmt not in FORMATS or (fmt == "channel") != fetched:
        raise InvalidInput(
            gettext("Choose a format: %(formats)s.", formats=", ".join(f for f in FORMATS if f != "channel")), "format"
        )
    if channel_account_id is not None:
        account = db.session.get(ChannelAccount, (tenant_id, channel_account_id))
        if account is None:
            raise InvalidInput(gettext("That channel account does not exist."), "channel_account_id")
        livemode = account.mode == "live"
    elif livemode is None:
        raise InvalidInput(gettext("Say whether the bank statement is for live or test money."), "livemode")
    if fmt == "csv" and mapping_for(tenant_id, channel_account_id) is None:
        raise InvalidInput(gettext("Save this source's CSV column mapping first."), "format")
    import_id = uuid.uuid4()
    path = storage_path(upload_dir, tenant_id, import_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("xb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidInput(
                        gettext("The file is larger than %(size)s MB.", size=max_bytes // (1024 * 1024)), "file"
                    )
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidInput(gettext("The file is empty."), "file")
        fingerprint = digest.hexdigest()
        # Two uploads of one file at once: the second waits here, then finds the first.
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(int(fingerprint[:15], 16))))
        seen = db.session.execute(
            sa.select(StatementImport).where(
                StatementImport.tenant_id == tenant_id, StatementImport.fingerprint == fingerprint
            )
        ).scalar_one_or_none()
        if seen is not None:
            path.unlink()
            return Stored(seen, already_imported=True)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    row = StatementImport(
        tenant_id=tenant_id,
        id=import_id,
        channel_account_id=channel_account_id,
        livemode=bool(livemode),
        format=fmt,
        filename=(filename or "statement")[:255],
        fingerprint=fingerprint,
        size=size,
        storage_path=str(path),
        uploaded_by=actor.email,
    )
    db.session.add(row)
    db.session.flush()
    audit.record(
        tenant_id,
        actor,
        "reconciliation.file_uploaded",
        "statement_import",
        import_id,
        audit.created(filename=row.filename, format=fmt, size=size, fingerprint=fingerprint),
    )
    db.session.commit()
    return Stored(row, already_imported=False)


# --- statements fetched from a channel ---------------------------------------------------------


def fetch_statement(
    tenant_id: uuid.UUID, channel_account_id: uuid.UUID, day: date, *, upload_dir: Path, actor: Actor
) -> Stored:
    """Download a day's statement through the channel's adapter (no transaction is open during the
    call) and store it like an upload, as a `channel` CSV; a fetch that brings the same content
    again is the same file (already imported)."""
    account = db.session.get(ChannelAccount, (tenant_id, channel_account_id))
    if account is None:
        raise InvalidInput(gettext("That channel account does not exist."), "channel_account_id")
    adapter = adapter_of(account)
    if not adapter.capabilities.statements:
        raise InvalidInput(
            gettext("%(name)s (%(type)s) offers no statement download.", name=account.name, type=account.type),
            "channel_account_id",
        )
    db.session.commit()  # never call a channel inside a database transaction
    statement = adapter.fetch_statement(day)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CHANNEL_COLUMNS)
    for line in statement.lines:
        charge = line.kind in ("charge", "payment")
        writer.writerow(
            (
                line.charge_reference if charge and line.charge_reference else line.reference,
                to_major(line.amount, line.currency),
                line.currency,
                line.occurred_at.date().isoformat(),
                "payment" if charge else line.kind,
                f"fee {to_major(line.fee, line.currency)}" if line.fee else "",
            )
        )
    return store_upload(
        tenant_id,
        io.BytesIO(out.getvalue().encode()),
        filename=f"{account.name} {day.isoformat()} (fetched)",
        fmt="channel",
        channel_account_id=channel_account_id,
        livemode=None,
        upload_dir=upload_dir,
        actor=actor,
        fetched=True,
    )


# --- the import ----------------------------------------------------------------------------

_STAGING = """
    CREATE TEMPORARY TABLE statement_staging (
        line_no integer, reference text, amount bigint, currency text, booked_on date, kind text, description text
    ) ON COMMIT DROP
"""

_INSERT_LINES = sa.text(
    """
    WITH numbered AS (
        SELECT *, row_number() OVER (
            PARTITION BY reference, amount, currency, booked_on, kind ORDER BY line_no
        ) AS occurrence
        FROM statement_staging
    ), inserted AS (
        INSERT INTO statement_lines (tenant_id, id, import_id, source_key, line_key, line_no, reference, amount,
                                     currency, booked_on, kind, description, status)
        SELECT :tenant_id, gen_random_uuid(), :import_id, :source_key,
               md5(concat_ws('|', reference, amount, currency, booked_on, kind, occurrence)),
               line_no, left(reference, 140), amount, currency, booked_on, kind, left(description, 500), 'unmatched'
        FROM numbered
        ON CONFLICT (tenant_id, source_key, line_key) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM numbered), (SELECT count(*) FROM inserted)
    """
)

# Payments and refunds of one channel account, as a statement shows them (refunds negative).
_CHANNEL_RECORDS = """
    SELECT 'payment' AS record_type, pi.id AS record_id, pi.channel_reference AS reference,
           pi.amount_received AS amount, pi.currency,
           CAST(timezone(t.time_zone, pi.created_at) AS date) AS day
    FROM payment_intents AS pi JOIN tenants AS t ON t.id = pi.tenant_id
    WHERE pi.tenant_id = :tenant_id AND pi.channel_account_id = :account_id AND pi.amount_received > 0
    UNION ALL
    SELECT 'refund', r.id, r.channel_reference, -r.amount, r.currency,
           CAST(timezone(t.time_zone, r.created_at) AS date)
    FROM refunds AS r
    JOIN payment_intents AS pi ON pi.tenant_id = r.tenant_id AND pi.id = r.payment_intent_id
    JOIN tenants AS t ON t.id = r.tenant_id
    WHERE r.tenant_id = :tenant_id AND pi.channel_account_id = :account_id AND r.status = 'succeeded'
"""

# Payouts the bank was asked to pay (negative: money out), by their id (the files' end-to-end id).
_BANK_RECORDS = """
    SELECT 'payout' AS record_type, p.id AS record_id, p.id AS reference, -p.amount AS amount, p.currency,
           CAST(timezone(t.time_zone, COALESCE(p.sent_at, p.created_at)) AS date) AS day
    FROM payouts AS p JOIN tenants AS t ON t.id = p.tenant_id
    WHERE p.tenant_id = :tenant_id AND p.livemode = :livemode AND p.status IN ('in_transit', 'paid')
"""


def _records(channel_account_id: uuid.UUID | None) -> str:
    return _BANK_RECORDS if channel_account_id is None else _CHANNEL_RECORDS


def _match_by_reference(records: str) -> sa.TextClause:
    """One line per record: the first line of this import with the record's reference, unless a
    line of an earlier import matched it already (a second line for the same money stays
    unmatched and goes to suspense: the channel may have booked it twice)."""
    return sa.text(
        f"""
        WITH records AS ({records}),
        candidates AS (
            SELECT DISTINCT ON (rec.record_type, rec.record_id)
                   l.id AS line_id, rec.record_type, rec.record_id, rec.amount, rec.currency
            FROM statement_lines AS l JOIN records AS rec ON rec.reference = l.reference
            WHERE l.tenant_id = :tenant_id AND l.import_id = :import_id AND l.status = 'unmatched'
              AND l.reference <> ''
              AND NOT EXISTS (SELECT 1 FROM statement_lines AS m
                              WHERE m.tenant_id = :tenant_id AND m.record_type = rec.record_type
                                AND m.record_id = rec.record_id AND m.status IN ('matched', 'mismatch'))
            ORDER BY rec.record_type, rec.record_id, l.line_no
        )
        UPDATE statement_lines AS l
        SET status = CASE WHEN l.amount = c.amount AND l.currency = c.currency THEN 'matched' ELSE 'mismatch' END,
            record_type = c.record_type, record_id = c.record_id
        FROM candidates AS c
        WHERE l.tenant_id = :tenant_id AND l.id = c.line_id
        """
    )


def _match_by_amount(records: str) -> sa.TextClause:
    """Lines left with no known reference against records no line matched yet: by amount and
    currency, the n-th line with the n-th record (both in date order), within the window."""
    return sa.text(
        f"""
        WITH records AS ({records}),
        free AS (
            SELECT rec.*, row_number() OVER (PARTITION BY rec.amount, rec.currency ORDER BY rec.day, rec.record_id) AS n
            FROM records AS rec
            WHERE rec.day BETWEEN CAST(:first AS date) - :window AND CAST(:last AS date) + :window
              AND NOT EXISTS (SELECT 1 FROM statement_lines AS m
                              WHERE m.tenant_id = :tenant_id AND m.record_type = rec.record_type
                                AND m.record_id = rec.record_id)
        ), open_lines AS (
            SELECT l.id, l.amount, l.currency, l.booked_on,
                   row_number() OVER (PARTITION BY l.amount, l.currency ORDER BY l.booked_on, l.line_no) AS n
            FROM statement_lines AS l
            WHERE l.tenant_id = :tenant_id AND l.import_id = :import_id AND l.status = 'unmatched'
        )
        UPDATE statement_lines AS l SET status = 'matched', record_type = f.record_type, record_id = f.record_id
        FROM open_lines AS o JOIN free AS f ON f.amount = o.amount AND f.currency = o.currency AND f.n = o.n
        WHERE l.tenant_id = :tenant_id AND l.id = o.id AND abs(f.day - o.booked_on) <= :window
        """
    )


def _shorts(records: str) -> sa.TextClause:
    """Records of the statement's days that no line of any import of this source matched."""
    return sa.text(
        f"""
        WITH records AS ({records})
        SELECT rec.record_type, rec.record_id, rec.amount, rec.currency
        FROM records AS rec
        WHERE rec.day BETWEEN :first AND :last
          AND NOT EXISTS (SELECT 1 FROM statement_lines AS m
                          WHERE m.tenant_id = :tenant_id AND m.record_type = rec.record_type
                            AND m.record_id = rec.record_id)
        ORDER BY rec.day, rec.record_id
        """
    )


class _Progress:
    """Writes a run's progress on its own connection, so the console sees it during the import."""

    def __init__(self, tenant_id: uuid.UUID, run_id: uuid.UUID | None):
        self.tenant_id, self.run_id = tenant_id, run_id

    def __call__(self, processed: int, total: int | None = None) -> None:
        if self.run_id is None:
            return
        with db.engine.begin() as conn:
            conn.execute(sa.text("SELECT set_config('app.tenant_id', :tenant, true)"), {"tenant": str(self.tenant_id)})
            values = {"processed": processed} if total is None else {"processed": processed, "total": total}
            conn.execute(
                sa.update(ClearingRun)
                .where(ClearingRun.tenant_id == self.tenant_id, ClearingRun.id == self.run_id)
                .values(**values)
            )


def count_lines(path: Path) -> int:
    """A quick first pass for the progress bar's total (newlines, or XML entries)."""
    lines = entries = 0
    tail = b""
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            lines += chunk.count(b"\n")
            window = tail + chunk
            entries += window.count(b"<Ntry>") + window.count(b"<Ntry ") - tail.count(b"<Ntry>") - tail.count(b"<Ntry ")
            tail = chunk[-8:]
    return entries or lines


def run_import(tenant_id: uuid.UUID, import_id: uuid.UUID, run: ClearingRun | None = None) -> dict:
    """Import and reconcile one stored statement (one transaction). Returns the counts, also
    stored on the import; a bad file marks the import failed with its line and imports nothing."""
    row = db.session.get(StatementImport, (tenant_id, import_id), with_for_update=True)
    if row is None or row.status == "succeeded":
        db.session.rollback()
        return {} if row is None else row.counts
    path = Path(row.storage_path)
    progress = _Progress(tenant_id, run.id if run else None)
    total = count_lines(path)
    progress(0, total)
    mapping = mapping_for(tenant_id, row.channel_account_id) if row.format == "csv" else None
    source_key = str(row.channel_account_id) if row.channel_account_id else "bank"
    fmt, livemode, account_id = row.format, row.livemode, row.channel_account_id
    row.status, row.error, row.error_line = "running", None, None
    db.session.commit()  # release the import's row lock before the long transaction

    try:
        counts = _import(tenant_id, import_id, path, fmt, mapping, source_key, account_id, livemode, progress)
    except StatementError as exc:
        _failed(tenant_id, import_id, exc.message, exc.line)
        log.info("statement import %s refused: %s", import_id, exc)
        return {"error": str(exc)}
    except Exception as exc:
        # Not the file's fault (the database went away...): the run is retried; the import says why.
        _failed(tenant_id, import_id, f"the import stopped: {type(exc).__name__}; it is retried")
        raise
    progress(total, total)
    return counts


def _failed(tenant_id: uuid.UUID, import_id: uuid.UUID, message: str, line: int | None = None) -> None:
    db.session.rollback()
    failed = db.session.get(StatementImport, (tenant_id, import_id))
    failed.status, failed.error_line, failed.error = "failed", line, message[:2000]
    db.session.commit()


def _import(tenant_id, import_id, path, fmt, mapping, source_key, account_id, livemode, progress) -> dict:
    session = db.session
    connection = session.connection()
    connection.exec_driver_sql(_STAGING)
    raw = connection.connection.driver_connection  # psycopg's connection, in this same transaction
    staged = 0
    with (
        path.open("rb") as source,
        raw.cursor() as cursor,
        cursor.copy(
            "COPY statement_staging (line_no, reference, amount, currency, booked_on, kind, description) FROM STDIN"
        ) as copy,
    ):
        for line in read(fmt, source, mapping):
            copy.write_row(
                (line.line, line.reference, line.amount, line.currency, line.booked_on, line.kind, line.description)
            )
            staged += 1
            if staged % PROGRESS_EVERY == 0:
                progress(staged)
    if staged == 0:
        if fmt != "channel":
            raise StatementError(1, "the file has no statement lines")
        # A day without movements at the channel: nothing to match, and nothing missing is known.
        row = session.get(StatementImport, (tenant_id, import_id))
        row.status, row.counts = (
            "succeeded",
            {
                "lines": 0,
                "new": 0,
                "duplicates": 0,
                "matched": 0,
                "long": 0,
                "mismatch": 0,
                "short": 0,
                "resolved_shorts": 0,
            },
        )
        session.commit()
        return row.counts
    params = {"tenant_id": tenant_id, "import_id": import_id, "source_key": source_key}
    read_count, new_count = session.execute(_INSERT_LINES, params).one()
    first, last = session.execute(sa.text("SELECT min(booked_on), max(booked_on) FROM statement_staging")).one()
    records = _records(account_id)
    match = {**params, "account_id": account_id, "livemode": livemode}
    session.execute(_match_by_reference(records), match)
    session.execute(_match_by_amount(records), {**match, "first": first, "last": last, "window": MATCH_WINDOW_DAYS})
    opened = suspense.open_for_import(
        tenant_id,
        import_id,
        account_id,
        livemode,
        session.execute(_shorts(records), {**match, "first": first, "last": last}).all(),
    )
    status_counts = dict(
        session.execute(
            sa.text(
                "SELECT status, count(*) FROM statement_lines WHERE tenant_id = :tenant_id AND import_id = :import_id "
                "GROUP BY status"
            ),
            params,
        ).all()
    )
    counts = {
        "lines": read_count,
        "new": new_count,
        "duplicates": read_count - new_count,
        "matched": status_counts.get("matched", 0),
        "long": status_counts.get("long", 0),
        "mismatch": status_counts.get("mismatch", 0),
        "short": opened["short"],
        "resolved_shorts": opened["resolved"],
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
    }
    row = session.get(StatementImport, (tenant_id, import_id))
    row.status, row.counts, row.error, row.error_line = "succeeded", counts, None, None
    session.commit()
    if opened["short"]:
        log.warning(
            "reconciliation: %d platform-only record(s) for tenant %s in import %s (possible loss)",
            opened["short"],
            tenant_id,
            import_id,
        )
        # The alert is the portal's (its e-mails carry the tenant's brand): queued by name.
        queue.enqueue("mail", ALERT_JOB, str(tenant_id), str(import_id), retry=Retry(max=3, interval=[10, 60, 300]))
    return counts


def imports(tenant_id: uuid.UUID, limit: int = 50) -> list[StatementImport]:
    return list(
        db.session.execute(
            sa.select(StatementImport)
            .where(StatementImport.tenant_id == tenant_id)
            .order_by(StatementImport.created_at.desc(), StatementImport.id.desc())
            .limit(limit)
        ).scalars()
    )
