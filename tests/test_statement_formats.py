"""Statement readers: each format read into exact minor-unit lines, streamed, and every malformed
file refused naming the line and the problem."""

import io
from datetime import date

import pytest

from clearing.statement_formats import ColumnMapping, StatementError, StatementLine, read

MAPPING = ColumnMapping(reference="Ref", amount="Amount", date="Booked", currency="Ccy", type="Type")

MT940 = """:20:STMT1
:25:NL91ABNA0417164300
:28C:00001/001
:60F:C261101EUR1000,00
:61:2611021102C123,45NTRFNONREF//BANKREF1
:86:/EREF/po_abc123/REMI/Payment Coffee
:61:2611021102D50,00NTRFNONREF//BANKREF2
:86:Bank fee
:62F:C261102EUR1073,45
-
:20:STMT2
:25:NL91ABNA0417164300
:28C:00002/001
:60F:C261102EUR1073,45
:61:2611031103D10,01NTRFpo_def456//BANKREF3
:62F:C261103EUR1063,44
-
"""

CAMT = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
 <BkToCstmrStmt><Stmt><Id>S1</Id>
  <Ntry><Amt Ccy="EUR">250.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>2026-11-03</Dt></BookgDt>
   <NtryDtls><TxDtls><Refs><EndToEndId>po_abc123</EndToEndId></Refs><RmtInf><Ustrd>Payout</Ustrd></RmtInf></TxDtls></NtryDtls>
  </Ntry>
  <Ntry><Amt Ccy="EUR">99.90</Amt><CdtDbtInd>CRDT</CdtDbtInd><BookgDt><Dt>2026-11-04</Dt></BookgDt>
   <AcctSvcrRef>SETTLE-77</AcctSvcrRef>
  </Ntry>
 </Stmt></BkToCstmrStmt>
</Document>
"""


def lines(fmt, data, mapping=None):
    return list(read(fmt, io.BytesIO(data if isinstance(data, bytes) else data.encode()), mapping))


def test_a_mapped_csv_is_read_exactly():
    data = "Ref,Amount,Ccy,Booked,Type\nch_1,12.34,usd,2026-11-02,charge\nre_1,-5,USD,2026-11-03,refund\n"
    assert lines("csv", data, MAPPING) == [
        StatementLine(2, "ch_1", 1234, "USD", date(2026, 11, 2), "payment", ""),
        StatementLine(3, "re_1", -500, "USD", date(2026, 11, 3), "refund", ""),
    ]


@pytest.mark.parametrize(
    "data, line, problem",
    [
        ("Ref,Amount,Ccy\nch_1,1.00,USD\n", 1, "no column 'Booked'"),
        (
            "Ref,Amount,Ccy,Booked,Type\nch_1,1.00,USD,2026-11-02,charge\nch_2,abc,USD,2026-11-02,charge\n",
            3,
            "'abc' is not an amount",
        ),
        ("Ref,Amount,Ccy,Booked,Type\nch_1,1.001,USD,2026-11-02,charge\n", 2, "at most 2 decimals"),
        ("Ref,Amount,Ccy,Booked,Type\nch_1,1.00,XXQ,2026-11-02,charge\n", 2, "ISO 4217"),
        ("Ref,Amount,Ccy,Booked,Type\nch_1,1.00,USD,02/11/2026,charge\n", 2, "is not a date"),
        ("Ref,Amount,Ccy,Booked,Type\nch_1,1.00,USD\n", 2, "3 cells, the header has 5"),
        ("", 1, "empty"),
    ],
)
def test_a_bad_csv_names_the_line(data, line, problem):
    with pytest.raises(StatementError) as refused:
        lines("csv", data, MAPPING)
    assert refused.value.line == line and problem in refused.value.message


def test_bad_encoding_names_its_line():
    data = b"Ref,Amount,Ccy,Booked,Type\nch_1,1.00,USD,2026-11-02,charge\nch_\xff,1.00,USD,2026-11-02,charge\n"
    with pytest.raises(StatementError, match="line 3: the file is not utf-8-sig text"):
        lines("csv", data, MAPPING)


def test_mt940_statements_are_read_one_by_one():
    assert lines("mt940", MT940) == [
        StatementLine(
            5, "po_abc123", 12345, "EUR", date(2026, 11, 2), "payment", "/EREF/po_abc123/REMI/Payment Coffee"
        ),
        StatementLine(7, "", -5000, "EUR", date(2026, 11, 2), "payout", "Bank fee"),
        StatementLine(15, "po_def456", -1001, "EUR", date(2026, 11, 3), "payout", ""),
    ]


def test_mt940_without_tags_or_balance_is_refused():
    with pytest.raises(StatementError, match="line 1: no MT940 field tags"):
        lines("mt940", "hello\nworld\n")
    with pytest.raises(StatementError, match="line 1: the statement has no opening balance"):
        lines("mt940", ":20:X\n:25:Y\n:61:2611021102C1,00NTRFNONREF\n")


def test_camt053_entries_with_direction_and_reference():
    assert lines("camt053", CAMT) == [
        StatementLine(1, "po_abc123", -25000, "EUR", date(2026, 11, 3), "payout", "Payout"),
        StatementLine(2, "SETTLE-77", 9990, "EUR", date(2026, 11, 4), "payment", ""),
    ]


def test_truncated_or_hostile_xml_is_refused():
    with pytest.raises(StatementError, match="malformed or cut short"):
        lines("camt053", CAMT[: CAMT.index("<NtryDtls>") + 20])
    bomb = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><Document>&b;</Document>'
    with pytest.raises(StatementError, match="forbidden constructs"):
        lines("camt053", bomb)


def test_alipay_bill_in_gbk():
    bill = (
        "#支付宝业务明细查询\n#账号：[20880000000000000156]\n"
        "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,订单金额（元）\n"
        "2026110222001,pi_1,交易,咖啡,2026-11-02 10:00:00,2026-11-02 10:00:05,38.50\n"
        "2026110222002,pi_2,退款,咖啡,2026-11-02 11:00:00,2026-11-02 11:00:05,-8.50\n"
        "#-----------------------------------------业务明细列表结束------------------------------------\n"
    ).encode("gbk")
    assert lines("alipay", bill) == [
        StatementLine(4, "2026110222001", 3850, "CNY", date(2026, 11, 2), "payment", "交易"),
        StatementLine(5, "2026110222002", -850, "CNY", date(2026, 11, 2), "refund", "退款"),
    ]


def test_wechat_bill_with_backticks_and_summary():
    bill = (
        "交易时间,公众账号ID,商户号,微信订单号,商户订单号,交易状态,货币种类,应结订单金额,退款金额\n"
        "`2026-11-02 10:00:00,`wx1,`1900000109,`4200001,`pi_1,`SUCCESS,`CNY,`12.00,`0.00\n"
        "`2026-11-02 12:00:00,`wx1,`1900000109,`4200002,`pi_2,`REFUND,`CNY,`0.00,`3.00\n"
        "总交易单数,应结订单总金额,退款总金额\n`2,`12.00,`3.00\n"
    )
    assert lines("wechat", bill) == [
        StatementLine(2, "4200001", 1200, "CNY", date(2026, 11, 2), "payment", "SUCCESS"),
        StatementLine(3, "4200002", -300, "CNY", date(2026, 11, 2), "refund", "REFUND"),
    ]


def test_a_large_file_is_streamed():
    class Counting(io.RawIOBase):
        """A CSV of 200,000 lines produced on demand: never held whole in memory."""

        def __init__(self, rows):
            self.rows, self.sent, self.buffer = rows, 0, b"Ref,Amount,Ccy,Booked,Type\n"

        def readable(self):
            return True

        def readinto(self, target):
            while len(self.buffer) < len(target) and self.sent < self.rows:
                self.sent += 1
                self.buffer += f"ch_{self.sent},1.00,USD,2026-11-02,charge\n".encode()
            n = min(len(target), len(self.buffer))
            target[:n], self.buffer = self.buffer[:n], self.buffer[n:]
            return n

    source = Counting(200_000)
    reader = read("csv", io.BufferedReader(source), MAPPING)
    first = next(reader)
    assert first.reference == "ch_1" and source.sent < 10_000  # read ahead by one chunk, not the file
    assert sum(1 for _ in reader) == 199_999


def test_a_bad_camt053_entry_is_named_by_its_number():
    bad = CAMT.replace('<Amt Ccy="EUR">99.90</Amt>', '<Amt Ccy="EUR">ninety</Amt>')
    with pytest.raises(StatementError) as refused:
        lines("camt053", bad)
    assert refused.value.line is None
    assert str(refused.value) == "statement entry 2 (Ntry): 'ninety' is not an amount"
