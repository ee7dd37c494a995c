"""Exports of lists and reports to CSV and Excel, directly or as a job on the `exports` queue.

The rows are the page's: `clearing.listings` (payments, settlements, payouts, refunds, the audit
log, merchants, suspense items, statement imports, payout batches, charge items, coupons, payment links) and
`clearing.reports` (the report's rows) build them from the same filters the page read. A small
export (at most `EXPORT_DIRECT_MAX_ROWS` rows) is written straight into the response; a larger one
is a `ReportExport` row and a job (`run_export`) that streams the rows in keyset order (newest
first, as the lists show them, `CHUNK` at a time) into a file under the instance folder
(`<instance>/exports/<random name>`, outside the web root), reporting progress in the row and in
`job.meta` after each chunk.

Money: major units as exact `Decimal` (the currency's exponent applied, never float arithmetic),
with a currency column beside them. Excel cells are numbers with the currency's number of decimals
as their format (`#,##0.00` for EUR, `#,##0` for JPY), so sums in Excel work; CSV cells are the
same numbers as plain text with a dot ("1234.50").

A run is idempotent and resumable: it takes the export over with a new `run_token` and writes a
file of its own (`<name>.<token>.part`), renamed to the final name only when complete. A second
run (a retry, or the sweep after a worker died) starts the file again from the first row and
supersedes the first, which stops at its next progress write; a finished export is not run again.
So there is only ever one complete file, never a half-written one under the final name.
`sweep` (every minute) re-queues exports whose run went quiet for `STALE_AFTER`, marks exports
past their `expires_at` expired and deletes their files.

Column headers are in the language of whoever asked: a direct download in the request's, a job's
file in the language stored on its row (`ReportExport.locale`). Values stay as stored (states,
ids, e-mails), so a file reads the same to a program whatever the language.

The platform's audit log (every tenant's events, `Scope.tenant_id` None) is only ever a direct
download: `report_exports` rows are a tenant's (RLS), and an export of every tenant's events
belongs to none of them, so `request_export` refuses that scope and the page asks to narrow the
filters beyond `EXPORT_DIRECT_MAX_ROWS`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from flask import current_app
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from rq import Retry, get_current_job

from clearing import listings, reports
from clearing.models import EXPORT_FORMATS, EXPORT_KINDS, ReportExport
from core import queue
from core.db import db
from core.i18n import current_locale, speaking
from core.money import exponent, to_major
from tenants import audit, isolation
from tenants.models import Tenant

log = logging.getLogger(__name__)

QUEUE = "exports"
CHUNK = 1000
STALE_AFTER = timedelta(minutes=2)
SWEEP_INTERVAL = 60  # seconds
ACTIVE = ("queued", "running")
MIMETYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
# Sheet names (Excel allows 31 characters, no translation needed to find one's data).
TITLES = {
    "payments": "Payments",
    "settlements": "Settlements",
    "payouts": "Payouts",
    "report": "Report",
    "audit": "Audit log",
    "merchants": "Merchants",
    "refunds": "Refunds",
    "charge_items": "Charge items",
    "coupons": "Coupons",
    "payment_links": "Payment links",
    "suspense": "Suspense items",
    "statement_imports": "Statement imports",
    "payout_batches": "Payout batches",
}


def _now() -> datetime:
    return datetime.now(UTC)


def tenant_zone(tenant_id: uuid.UUID) -> ZoneInfo:
    name = db.session.scalar(sa.select(Tenant.time_zone).where(Tenant.id == tenant_id))
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def folder() -> Path:
    path = Path(current_app.config["INSTANCE_DIR"]) / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the rows ------------------------------------------------------------------------------------


@dataclass
class Source:
    """What an export writes: its columns, how many rows, and the rows in chunks (with the names of
    the merchants in each chunk, for the tenant's lists)."""

    title: str
    columns: list[listings.Column]
    total: int
    chunks: Iterator[tuple[list[Any], dict]]


def _keyset(statement: sa.Select, listing: listings.ListKind, scope: listings.Scope):
    model = listing.model
    at = getattr(model, listing.order)
    key = sa.tuple_(at, model.id)
    order = (at.asc(), model.id.asc()) if listing.ascending else (at.desc(), model.id.desc())
    position = None
    while True:
        page = statement
        if position is not None:
            page = page.where(key > sa.tuple_(*position) if listing.ascending else key < sa.tuple_(*position))
        rows = db.session.execute(page.order_by(*order).limit(CHUNK)).scalars().all()
        if not rows:
            return
        names = listing.names(scope, rows) if listing.names else {}
        position = (getattr(rows[-1], listing.order), rows[-1].id)
        yield rows, names


def source(scope: listings.Scope, kind: str, filters: Mapping[str, str]) -> Source:
    """The rows of list `kind` (or the report) that `filters` select in `scope`, as the page shows them.
    Filters that cannot be used are ignored, as the page ignores them."""
    if kind == "report":
        parsed = reports.parse(scope, filters)
        report = reports.run(parsed.query)
        columns = reports.columns(scope, parsed.query, report.labels)
        rows = reports.export_rows(report)
        return Source(TITLES[kind], columns, len(rows), iter([(rows, {})]) if rows else iter([]))
    if kind not in listings.KINDS:
        raise ValueError(f"unknown export kind {kind!r}")
    listing = listings.KINDS[kind]
    statement, _ = listing.build(scope, filters)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(statement.subquery()))
    return Source(
        TITLES[kind],
        listing.columns(scope),
        total,
        _keyset(statement, listing, scope),
    )


def count(scope: listings.Scope, kind: str, filters: Mapping[str, str]) -> int:
    """How many rows an export would have (the report's rows are counted by running it)."""
    if kind == "report":
        return source(scope, kind, filters).total
    statement, _ = listings.KINDS[kind].build(scope, filters)
    return db.session.scalar(sa.select(sa.func.count()).select_from(statement.subquery()))


def _cell(column: listings.Column, row, names: dict):
    value = column.value(row, names)
    if column.money and value is not None:
        return to_major(value, row.currency)
    return value


# --- the writers ---------------------------------------------------------------------------------


class CsvFile:
    def __init__(self, out, columns: list[listings.Column], title: str):
        self.out = out
        self.columns = columns
        self.writer = csv.writer(out)
        self.writer.writerow([column.header for column in columns])

    def rows(self, rows: list, names: dict) -> None:
        for row in rows:
            values = [_cell(column, row, names) for column in self.columns]
            self.writer.writerow(["" if value is None else value for value in values])

    def close(self) -> None:
        self.out.flush()


class XlsxFile:
    """openpyxl's write-only workbook: rows go to a temporary file as they come, so a large export
    never holds its rows in memory."""

    def __init__(self, out, columns: list[listings.Column], title: str):
        self.out = out
        self.columns = columns
        self.book = Workbook(write_only=True)
        self.sheet = self.book.create_sheet(title)
        self.sheet.append([column.header for column in columns])
        self.formats: dict[str, str] = {}

    def _format(self, currency: str) -> str:
        if currency not in self.formats:
            places = exponent(currency)
            self.formats[currency] = "#,##0" + ("." + "0" * places if places else "")
        return self.formats[currency]

    def rows(self, rows: list, names: dict) -> None:
        for row in rows:
            cells = []
            for column in self.columns:
                value = _cell(column, row, names)
                if column.money and value is not None:
                    cell = WriteOnlyCell(self.sheet, value=value)
                    cell.number_format = self._format(row.currency)
                    cells.append(cell)
                else:
                    cells.append(value)
            self.sheet.append(cells)

    def close(self) -> None:
        self.book.save(self.out)


def _writer(fmt: str, out, source_: Source):
    return (CsvFile if fmt == "csv" else XlsxFile)(out, source_.columns, source_.title)


def write_now(scope: listings.Scope, kind: str, fmt: str, filters: Mapping[str, str]) -> bytes:
    """A small export, whole, for a direct download."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    data = source(scope, kind, filters)
    buffer = io.StringIO(newline="") if fmt == "csv" else io.BytesIO()
    writer = _writer(fmt, buffer, data)
    for rows, names in data.chunks:
        writer.rows(rows, names)
    writer.close()
    return buffer.getvalue().encode("utf-8-sig") if fmt == "csv" else buffer.getvalue()


def record_download(
    scope: listings.Scope, kind: str, fmt: str, filters: Mapping[str, str], rows: int, actor: audit.Actor
) -> None:
    """Audit a direct download (commits): under the scope's tenant, or, for the platform's audit log,
    under each tenant whose events the file holds (each tenant's log shows that they left)."""
    change = audit.created(kind=kind, format=fmt, filters=dict(filters), rows=rows)
    if scope.platform:
        statement, _ = listings.KINDS[kind].build(scope, filters)
        tenants = db.session.scalars(sa.select(statement.subquery().c.tenant_id).distinct()).all()
    else:
        tenants = [scope.tenant_id]
    for tenant_id in tenants:
        audit.record(tenant_id, actor, "report.exported", "report_export", kind, change)
    db.session.commit()


def download_name(kind: str, fmt: str, when: datetime, zone: ZoneInfo) -> str:
    return f"{kind}-{when.astimezone(zone).strftime('%Y%m%d-%H%M')}.{fmt}"


# --- export jobs ---------------------------------------------------------------------------------


def request_export(
    scope: listings.Scope,
    kind: str,
    fmt: str,
    filters: Mapping[str, str],
    actor: audit.Actor,
) -> ReportExport:
    """Record an export of `kind` with the page's `filters` and queue its job (commits). The file's
    headers will be in the language messages are in now."""
    if kind not in EXPORT_KINDS or fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export {kind!r} as {fmt!r}")
    if scope.platform:
        raise ValueError("an export of every tenant is a direct download only")
    export = ReportExport(
        tenant_id=scope.tenant_id,
        id=uuid.uuid4(),
        merchant_id=scope.merchant_id,
        requested_by=actor.email or "system",
        kind=kind,
        format=fmt,
        filters=dict(filters),
        locale=current_locale(),
        status="queued",
        rows_total=count(scope, kind, filters),
        file_name=f"{secrets.token_urlsafe(24)}.{fmt}",
    )
    db.session.add(export)
    audit.record(
        scope.tenant_id,
        actor,
        "report.export_requested",
        "report_export",
        export.id,
        audit.created(kind=kind, format=fmt, filters=dict(filters), merchant_id=str(scope.merchant_id or "")),
    )
    db.session.commit()
    _enqueue(export)
    return export


def _enqueue(export: ReportExport) -> None:
    # One job id per attempt: a dead worker's job stays "started" in Redis until its heartbeat
    # expires, and the sweep must not wait for that.
    with isolation.tenant_context(db.session, export.tenant_id):
        queue.enqueue(
            QUEUE,
            run_export,
            str(export.tenant_id),
            str(export.id),
            job_id=f"export-{export.id}-{export.attempts}",
            if_absent=True,
            retry=Retry(max=2, interval=[10, 60]),
        )


def _take_over(tenant_id: uuid.UUID, export_id: uuid.UUID, token: str) -> ReportExport | None:
    export = db.session.get(ReportExport, (tenant_id, export_id), with_for_update=True)
    if export is None or export.status not in ACTIVE:
        db.session.rollback()
        return None
    export.status = "running"
    export.run_token = token
    export.attempts += 1
    export.rows_done = 0
    export.error = None
    export.progressed_at = _now()
    db.session.commit()
    return export


def _progress(tenant_id: uuid.UUID, export_id: uuid.UUID, token: str, done: int, **values: Any) -> bool:
    """Write progress if this run still owns the export (commits); False: another run took it over."""
    result = db.session.execute(
        sa.update(ReportExport)
        .where(
            ReportExport.tenant_id == tenant_id,
            ReportExport.id == export_id,
            ReportExport.run_token == token,
            ReportExport.status == "running",
        )
        .values(rows_done=done, progressed_at=_now(), **values)
    )
    db.session.commit()
    job = get_current_job()
    if job is not None:
        job.meta.update({"rows_done": done, **({"status": values["status"]} if "status" in values else {})})
        job.save_meta()
    return result.rowcount == 1


def run_export(tenant_id: str, export_id: str) -> dict:
    """The job: write the export's file, with progress; see the module's notes on running twice."""
    tenant, key = uuid.UUID(tenant_id), uuid.UUID(export_id)
    token = uuid.uuid4().hex
    export = _take_over(tenant, key, token)
    if export is None:
        done = db.session.get(ReportExport, (tenant, key))
        db.session.rollback()
        return {"status": done.status if done else "missing"}
    scope = listings.Scope(tenant, export.merchant_id, tenant_zone(tenant), email=export.requested_by)
    fmt, final = export.format, folder() / export.file_name
    part = final.with_name(f"{final.name}.{token}.part")
    filters, kind, locale = dict(export.filters), export.kind, export.locale
    done = 0
    try:
        with speaking(locale):
            data = source(scope, kind, filters)
        _progress(tenant, key, token, 0, rows_total=data.total)
        with (
            part.open("w", newline="", encoding="utf-8-sig") if fmt == "csv" else part.open("wb") as out,
            speaking(locale),
        ):
            writer = _writer(fmt, out, data)
            for rows, names in data.chunks:
                writer.rows(rows, names)
                done += len(rows)
                if not _progress(tenant, key, token, done):
                    log.info("export %s: taken over by another run after %s rows", key, done)
                    raise _Superseded
            writer.close()
        os.replace(part, final)
        ttl = timedelta(hours=current_app.config["EXPORT_TTL_HOURS"])
        now = _now()
        if _progress(
            tenant, key, token, done, rows_total=done, status="succeeded", finished_at=now, expires_at=now + ttl
        ):
            # Runs this one superseded stop at their next progress write; a killed one left its part file.
            _remove_parts(final)
        else:
            log.info("export %s: finished by another run", key)
        return {"status": "succeeded", "rows": done}
    except _Superseded:
        return {"status": "superseded", "rows": done}
    except Exception as exc:
        db.session.rollback()
        job = get_current_job()
        last = job is None or not job.retries_left
        _progress(
            tenant,
            key,
            token,
            done,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            **({"status": "failed", "finished_at": _now()} if last else {}),
        )
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def _remove_parts(final: Path) -> None:
    for part in final.parent.glob(f"{final.name}.*.part"):
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


class _Superseded(Exception):  # noqa: N818  (a signal between two lines of run_export, not an error)
    pass


def file_of(export: ReportExport) -> Path | None:
    """The finished file of an export still downloadable, or None."""
    if export.status != "succeeded" or not export.file_name:
        return None
    if export.expires_at is not None and export.expires_at <= _now():
        return None
    path = folder() / export.file_name
    return path if path.is_file() else None


# --- the sweep -----------------------------------------------------------------------------------


def schedule_sweep(after: int | None = None) -> None:
    queue.schedule_next(
        QUEUE, sweep, SWEEP_INTERVAL, "exports-sweep", after=after, scope=lambda: isolation.platform_scope(db.session)
    )


def sweep(slot: int | None = None, now: datetime | None = None) -> dict[str, int]:
    """Re-queue exports whose run went quiet (a dead worker); expire old ones and delete their files."""
    if slot is not None:
        schedule_sweep(after=slot)
    now = now or _now()
    with isolation.platform_scope(db.session):
        stale = (
            db.session.execute(
                sa.select(ReportExport).where(
                    ReportExport.status.in_(ACTIVE),
                    sa.func.coalesce(ReportExport.progressed_at, ReportExport.created_at) < now - STALE_AFTER,
                )
            )
            .scalars()
            .all()
        )
        expired = (
            db.session.execute(
                sa.select(ReportExport).where(ReportExport.status == "succeeded", ReportExport.expires_at <= now)
            )
            .scalars()
            .all()
        )
        for export in expired:
            if export.file_name:
                with contextlib.suppress(FileNotFoundError):
                    (folder() / export.file_name).unlink()
                _remove_parts(folder() / export.file_name)
            export.status = "expired"
        # Bump the attempt so the new job gets an id of its own (the dead one's is still "started").
        for export in stale:
            export.attempts += 1
            export.progressed_at = now
        db.session.commit()
        requeue = [(export.tenant_id, export.id) for export in stale]
    for tenant_id, export_id in requeue:
        with isolation.tenant_context(db.session, tenant_id):
            export = db.session.get(ReportExport, (tenant_id, export_id))
            db.session.rollback()
            _enqueue(export)
    return {"resumed": len(requeue), "expired": len(expired)}
