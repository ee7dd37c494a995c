"""Statement file formats, read as streams: each reader takes a binary file object and yields one
`StatementLine` at a time, so memory does not grow with the file's size (a MT940 file is parsed
one statement message at a time, a CAMT.053 file one entry at a time).

Formats: `csv` (any CSV, with a per-channel `ColumnMapping`), `mt940` (SWIFT, by the `mt-940`
library), `camt053` (ISO 20022 bank-to-customer statement, parsed with `defusedxml`), `alipay`
(Alipay's merchant bill CSV, GBK), `wechat` (WeChat Pay's merchant bill CSV), and `channel` (the
CSV in fixed columns that a statement fetched through a channel adapter is written as).

Every problem raises `StatementError(line, message)`: the caller imports nothing of that file.
Amounts become integers in the currency's minor unit, exactly (no floats); a line's sign is the
money's direction for us (positive: money in).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import IO

import mt940
from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException

from core.money import MoneyError, normalise_currency, to_minor

FORMATS = ("csv", "mt940", "camt053", "alipay", "wechat", "channel")
# What `clearing.reconciliation.fetch_statement` writes from a channel's API: a CSV in fixed columns.
CHANNEL_COLUMNS = ("reference", "amount", "currency", "date", "type", "description")
MAX_LINE_CHARS = 10_000


class StatementError(ValueError):
    """A file that cannot be imported; `line` is the 1-based line of the file where it went wrong,
    or None where the message itself says where (a CAMT.053 entry: XML parsers give no lines)."""

    def __init__(self, line: int | None, message: str):
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class StatementLine:
    line: int  # where it is in the file (for messages)
    reference: str  # the channel's or bank's reference of the movement ('' when none)
    amount: int  # minor units, signed: positive = money in
    currency: str
    booked_on: date
    kind: str  # 'payment', 'refund', 'payout', 'fee', 'other'
    description: str = ""


@dataclass(frozen=True)
class ColumnMapping:
    """Which CSV column holds what (names as in the header, compared case-insensitively)."""

    reference: str
    amount: str
    date: str
    currency: str | None = None  # a column; or `fixed_currency`
    fixed_currency: str | None = None
    type: str | None = None
    description: str | None = None
    date_format: str = "%Y-%m-%d"

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _amount(text: str, currency: str, line: int) -> int:
    cleaned = (text or "").strip().replace(",", "").replace("`", "").replace("¥", "").replace("￥", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise StatementError(line, f"{text!r} is not an amount") from None
    try:
        return to_minor(value, currency)
    except MoneyError as exc:
        raise StatementError(line, str(exc)) from None


def _currency(text: str, line: int) -> str:
    try:
        return normalise_currency(text)
    except MoneyError as exc:
        raise StatementError(line, str(exc)) from None


def _date(text: str, fmt: str, line: int) -> date:
    try:
        return datetime.strptime((text or "").strip().lstrip("`"), fmt).date()
    except ValueError:
        raise StatementError(line, f"{text!r} is not a date like {datetime(2026, 3, 31).strftime(fmt)}") from None


def _text(stream: IO[bytes], encoding: str) -> Iterator[tuple[int, str]]:
    """The file's lines, decoded incrementally, numbered from 1; a bad byte names its line."""
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 0
    pending = ""
    while True:
        chunk = stream.read(65_536)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            before = number + pending.count("\n") + exc.object[: exc.start].count(b"\n")
            raise StatementError(before + 1, f"the file is not {encoding} text") from None
        pending += text
        *complete, pending = pending.split("\n")
        for raw in complete:
            number += 1
            if len(raw) > MAX_LINE_CHARS:
                raise StatementError(number, f"the line is longer than {MAX_LINE_CHARS} characters")
            yield number, raw.rstrip("\r")
        if not chunk:
            if pending:
                yield number + 1, pending.rstrip("\r")
            return


def _csv_rows(stream: IO[bytes], encoding: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on (quoted newlines are not supported in bills)."""
    for number, raw in _text(stream, encoding):
        if not raw.strip():
            continue
        try:
            (row,) = list(csv.reader([raw]))
        except (csv.Error, ValueError):
            raise StatementError(number, "the line is not valid CSV") from None
        yield number, row


def _columns(header: list[str], wanted: dict[str, str | None], line: int) -> dict[str, int]:
    names = [name.strip().lower().lstrip("\ufeff") for name in header]
    found = {}
    for key, name in wanted.items():
        if not name:
            continue
        try:
            found[key] = names.index(name.strip().lower())
        except ValueError:
            raise StatementError(line, f"the header has no column {name!r} (for {key})") from None
    return found


# --- generic CSV -----------------------------------------------------------------------------


def _kind(text: str, amount: int) -> str:
    lowered = (text or "").strip().lower()
    for kind in ("refund", "payout", "fee", "payment"):
        if kind in lowered:
            return kind
    if lowered in ("charge", "sale", "capture"):
        return "payment"
    return "payment" if amount > 0 and not lowered else (lowered and "other") or "other"


def read_csv(stream: IO[bytes], mapping: ColumnMapping) -> Iterator[StatementLine]:
    rows = _csv_rows(stream, "utf-8-sig")
    try:
        header_line, header = next(rows)
    except StopIteration:
        raise StatementError(1, "the file is empty") from None
    wanted = {
        "reference": mapping.reference,
        "amount": mapping.amount,
        "date": mapping.date,
        "currency": mapping.currency,
        "type": mapping.type,
        "description": mapping.description,
    }
    cols = _columns(header, wanted, header_line)
    if "currency" not in cols and not mapping.fixed_currency:
        raise StatementError(header_line, "the mapping names no currency column and no fixed currency")
    for number, row in rows:
        if len(row) < len(header):
            raise StatementError(number, f"{len(row)} cells, the header has {len(header)}")

        def cell(key: str, row=row) -> str:
            return row[cols[key]].strip() if key in cols else ""

        currency = _currency(cell("currency") or mapping.fixed_currency or "", number)
        amount = _amount(cell("amount"), currency, number)
        yield StatementLine(
            number,
            cell("reference"),
            amount,
            currency,
            _date(cell("date"), mapping.date_format, number),
            _kind(cell("type"), amount),
            cell("description")[:500],
        )


# --- MT940 ---------------------------------------------------------------------------------

_MT940_TAG = re.compile(r"^:(\d{2}[A-Z]?):")
_EREF = re.compile(r"/EREF/([^/]+)")


def read_mt940(stream: IO[bytes]) -> Iterator[StatementLine]:
    """One statement message (from `:20:` to the next) at a time through `mt-940`."""
    block: list[str] = []
    first_line = 1
    saw_tag = False
    for number, raw in _text(stream, "latin-1"):
        if raw.startswith(":20:") and block:
            yield from _mt940_block(block, first_line)
            block, first_line = [], number
        if not block:
            first_line = number
        if _MT940_TAG.match(raw):
            saw_tag = True
        block.append(raw)
    if not saw_tag:
        raise StatementError(1, "no MT940 field tags (:20:, :61:, ...) in the file")
    if block:
        yield from _mt940_block(block, first_line)


def _mt940_block(block: list[str], first_line: int) -> Iterator[StatementLine]:
    text = "\n".join(block)
    if ":61:" not in text:
        return
    if ":60F:" not in text and ":60M:" not in text:
        raise StatementError(first_line, "the statement has no opening balance (:60F:)")
    try:
        transactions = mt940.models.Transactions().parse(text)
    except Exception as exc:  # noqa: BLE001  (the library raises many types; all mean "cannot read")
        raise StatementError(first_line, f"the MT940 statement cannot be read: {exc}") from None
    lines_61 = [first_line + i for i, raw in enumerate(block) if raw.startswith(":61:")]
    if len(transactions) != len(lines_61):
        raise StatementError(first_line, "a :61: line of this statement cannot be read")
    for line, transaction in zip(lines_61, transactions, strict=True):
        data = transaction.data
        amount = data["amount"]
        currency = _currency(amount.currency, line)
        details = data.get("transaction_details") or ""
        eref = _EREF.search(details)
        reference = eref.group(1) if eref else (data.get("customer_reference") or "")
        if reference.upper() == "NONREF":
            reference = ""
        value = _amount(str(amount.amount), currency, line)
        booked = data.get("entry_date") or data.get("date")
        yield StatementLine(
            line,
            reference.strip(),
            value,
            currency,
            date(booked.year, booked.month, booked.day),
            "payment" if value > 0 else "payout",
            details[:500],
        )


# --- CAMT.053 ------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(element, *path: str):
    for name in path:
        if element is None:
            return None
        element = next((child for child in element if _local(child.tag) == name), None)
    return element


def _findtext(element, *path: str) -> str:
    found = _find(element, *path)
    return (found.text or "").strip() if found is not None else ""


def read_camt053(stream: IO[bytes]) -> Iterator[StatementLine]:
    """Entries (`Ntry`) one at a time, each cleared after use. An entry's problem names the entry
    (its number in the file); `StatementLine.line` is that number too."""
    index = 0
    try:
        for _event, element in SafeElementTree.iterparse(stream, events=("end",)):
            if _local(element.tag) != "Ntry":
                continue
            index += 1
            try:
                line = _camt_entry(element, index)
            except StatementError as exc:
                raise StatementError(None, f"statement entry {index} (Ntry): {exc.message}") from None
            element.clear()
            yield line
    except SafeElementTree.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else index
        raise StatementError(line, f"the XML is malformed or cut short ({exc})") from None
    except DefusedXmlException as exc:
        raise StatementError(1, f"the XML uses forbidden constructs ({type(exc).__name__})") from None
    if index == 0:
        raise StatementError(1, "no statement entries (Ntry) in the file")


def _camt_entry(element, index: int) -> StatementLine:
    amount_el = _find(element, "Amt")
    if amount_el is None:
        raise StatementError(index, "no amount (Amt)")
    currency = _currency(amount_el.get("Ccy", ""), index)
    value = _amount(amount_el.text or "", currency, index)
    direction = _findtext(element, "CdtDbtInd")
    if direction not in ("CRDT", "DBIT"):
        raise StatementError(index, "no credit/debit indicator (CdtDbtInd)")
    booked_text = _findtext(element, "BookgDt", "Dt") or _findtext(element, "BookgDt", "DtTm")[:10]
    tx = _find(element, "NtryDtls", "TxDtls")
    reference = (
        _findtext(tx, "Refs", "EndToEndId") or _findtext(tx, "Refs", "AcctSvcrRef") or _findtext(element, "AcctSvcrRef")
    )
    if reference.upper() == "NOTPROVIDED":
        reference = ""
    signed = value if direction == "CRDT" else -value
    return StatementLine(
        index,
        reference,
        signed,
        currency,
        _date(booked_text, "%Y-%m-%d", index),
        "payment" if signed > 0 else "payout",
        (_findtext(tx, "RmtInf", "Ustrd") or _findtext(element, "AddtlNtryInf"))[:500],
    )


# --- Alipay and WeChat Pay merchant bills ------------------------------------------------------

ALIPAY_COLUMNS = {"reference": "支付宝交易号", "amount": "订单金额（元）", "date": "完成时间", "type": "业务类型"}
WECHAT_COLUMNS = {
    "date": "交易时间",
    "reference": "微信订单号",
    "currency": "货币种类",
    "amount": "应结订单金额",
    "refund_amount": "退款金额",
    "status": "交易状态",
}


def read_alipay(stream: IO[bytes]) -> Iterator[StatementLine]:
    """Alipay's 业务明细 bill: GBK, `#` comment lines around a header and its rows."""
    header = None
    cols: dict[str, int] = {}
    seen = False
    for number, row in _csv_rows(stream, "gbk"):
        if row[0].startswith("#"):
            continue
        if header is None:
            header = row
            cols = _columns(header, dict(ALIPAY_COLUMNS), number)
            continue
        cells = [cell.strip() for cell in row]
        if len(cells) < len(header):
            raise StatementError(number, f"{len(cells)} cells, the header has {len(header)}")
        amount = _amount(cells[cols["amount"]], "CNY", number)
        kind = "refund" if "退款" in cells[cols["type"]] else "payment"
        seen = True
        yield StatementLine(
            number,
            cells[cols["reference"]],
            -abs(amount) if kind == "refund" else amount,
            "CNY",
            _date(cells[cols["date"]][:10], "%Y-%m-%d", number),
            kind,
            cells[cols["type"]],
        )
    if header is None:
        raise StatementError(1, "no header line (支付宝交易号, 订单金额（元）, ...) in the file")
    if not seen:
        raise StatementError(1, "the bill has a header but no rows")


def read_wechat(stream: IO[bytes]) -> Iterator[StatementLine]:
    """WeChat Pay's bill: UTF-8, every cell prefixed with a backtick, a summary after the rows."""
    header = None
    cols: dict[str, int] = {}
    for number, row in _csv_rows(stream, "utf-8-sig"):
        if header is None:
            header = row
            cols = _columns(header, dict(WECHAT_COLUMNS), number)
            continue
        if row[0].startswith("总交易单数") or row[0].startswith("总"):
            return  # the summary: header and totals of the whole bill follow
        cells = [cell.strip().lstrip("`") for cell in row]
        if len(cells) < len(header):
            raise StatementError(number, f"{len(cells)} cells, the header has {len(header)}")
        currency = _currency(
            "CNY" if cells[cols["currency"]] in ("CNY", "人民币", "") else cells[cols["currency"]], number
        )
        refund = cells[cols["status"]] == "REFUND"
        amount = _amount(cells[cols["refund_amount"] if refund else cols["amount"]], currency, number)
        yield StatementLine(
            number,
            cells[cols["reference"]],
            -abs(amount) if refund else amount,
            currency,
            _date(cells[cols["date"]][:10], "%Y-%m-%d", number),
            "refund" if refund else "payment",
            cells[cols["status"]],
        )
    if header is None:
        raise StatementError(1, "the file is empty")


def read(fmt: str, stream: IO[bytes], mapping: ColumnMapping | None = None) -> Iterator[StatementLine]:
    if fmt == "csv":
        if mapping is None:
            raise StatementError(1, "a CSV statement needs the channel's column mapping")
        return read_csv(stream, mapping)
    if fmt == "channel":
        fixed = ColumnMapping(reference="reference", amount="amount", date="date", currency="currency", type="type")
        return read_csv(stream, ColumnMapping(**{**fixed.__dict__, "description": "description"}))
    readers = {"mt940": read_mt940, "camt053": read_camt053, "alipay": read_alipay, "wechat": read_wechat}
    if fmt not in readers:
        raise ValueError(f"unknown statement format {fmt!r}; known: {', '.join(FORMATS)}")
    return readers[fmt](stream)


def sample(data: bytes) -> IO[bytes]:
    """A binary stream over bytes (tests, small uploads)."""
    return io.BytesIO(data)
