"""A settlement's statement: every balance transaction it released, as CSV and as PDF (fpdf2).

Both are built from the same rows (`statement_rows`), so the two files always agree with each
other and with the settlement's totals; amounts are printed in major units of the currency.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fpdf import FPDF

from clearing.models import Settlement
from core.db import db
from core.money import format_amount, to_major
from payments.models import BalanceTransaction

CSV_COLUMNS = ("id", "type", "source", "created", "description", "currency", "amount", "fee", "net")


@dataclass(frozen=True)
class StatementRow:
    id: str
    type: str
    source: str
    created: datetime
    description: str
    amount: int
    fee: int
    net: int


def statement_rows(settlement: Settlement) -> list[StatementRow]:
    rows = db.session.execute(
        sa.select(BalanceTransaction)
        .where(BalanceTransaction.tenant_id == settlement.tenant_id, BalanceTransaction.settlement_id == settlement.id)
        .order_by(BalanceTransaction.created_at, BalanceTransaction.id)
    ).scalars()
    return [
        StatementRow(t.id, t.type, t.source, t.created_at, t.description or "", t.amount, t.fee, t.net) for t in rows
    ]


def to_csv(settlement: Settlement, zone: ZoneInfo) -> str:
    """One line per balance transaction and a closing total line; times in the tenant's zone."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in statement_rows(settlement):
        writer.writerow(
            (
                row.id,
                row.type,
                row.source,
                row.created.astimezone(zone).isoformat(timespec="seconds"),
                row.description,
                settlement.currency,
                to_major(row.amount, settlement.currency),
                to_major(row.fee, settlement.currency),
                to_major(row.net, settlement.currency),
            )
        )
    total = settlement.charges_amount + settlement.refunds_amount
    writer.writerow(
        (
            "",
            "total",
            "",
            "",
            f"settlement {settlement.business_day.isoformat()}",
            settlement.currency,
            to_major(total, settlement.currency),
            to_major(settlement.fees, settlement.currency),
            to_major(settlement.net, settlement.currency),
        )
    )
    return out.getvalue()


def _latin(text: str) -> str:
    """fpdf2's core fonts are Latin-1: anything else is replaced, never an error."""
    return text.encode("latin-1", "replace").decode("latin-1")


def to_pdf(settlement: Settlement, merchant_name: str, brand: str, zone: ZoneInfo) -> bytes:
    """A printable statement: header, totals, then the transactions in a table."""
    currency = settlement.currency
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_title(_latin(f"Settlement {settlement.business_day.isoformat()}"))
    pdf.set_author(_latin(brand))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, _latin(f"{brand}: settlement statement"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    facts = [
        ("Merchant", merchant_name),
        ("Business day", settlement.business_day.isoformat()),
        ("Mode", "live" if settlement.livemode else "test"),
        ("Settled", settlement.created_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")),
        ("Charges", f"{settlement.charges_count}, {format_amount(settlement.charges_amount, currency)}"),
        ("Refunds", f"{settlement.refunds_count}, {format_amount(settlement.refunds_amount, currency)}"),
        ("Fees", format_amount(settlement.fees, currency)),
        ("Net to available balance", format_amount(settlement.net, currency)),
    ]
    for label, value in facts:
        pdf.cell(55, 6, _latin(label))
        pdf.cell(0, 6, _latin(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    widths = (52, 18, 34, 28, 28, 28)
    pdf.set_font("Helvetica", "B", 9)
    for width, title in zip(widths, ("Transaction", "Type", "Time", "Amount", "Fee", "Net"), strict=True):
        pdf.cell(width, 6, title, border="B")
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)
    for row in statement_rows(settlement):
        cells = (
            row.id,
            row.type,
            row.created.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            str(to_major(row.amount, currency)),
            str(to_major(row.fee, currency)),
            str(to_major(row.net, currency)),
        )
        for index, (width, text) in enumerate(zip(widths, cells, strict=True)):
            pdf.cell(width, 5, _latin(text), align="R" if index >= 3 else "L")
        pdf.ln()
    return bytes(pdf.output())
