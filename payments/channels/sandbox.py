"""The sandbox channel: deterministic, shared by every process, through the same contract as a real channel.

Charges are decided first by the amount (what the network does), then by the product and the
payment method (what the payer's card does). Stripe's test payment method names are used so
that the same test data works against both.

| amount % 100000 | outcome of `charge`                                                                  |
| --------------- | ------------------------------------------------------------------------------------ |
| 4001            | `ChannelTimeout`, but the charge IS made: `query(idempotency_key=...)` shows its     |
|                 | outcome (succeeded for a good card), so a timeout is resolved by querying            |
| 5003            | `ChannelUnavailable` (503 before acceptance): nothing is charged, fail over          |
| 7001            | slow: sleeps `slow_ms` (setting, default 3000), then answers as below                |
| any             | every call first sleeps `latency_ms` (setting, default 0): the simulated network     |

| payment method                                            | outcome                                      |
| --------------------------------------------------------- | -------------------------------------------- |
| pm_card_visa, pm_card_mastercard, pm_card_amex,           | succeeded (requires_capture when the capture |
| pm_card_visa_debit, pm_card_unionpay                      | method is manual)                            |
| pm_card_chargeDeclined                                    | `ChannelDeclined` generic_decline            |
| pm_card_chargeDeclinedInsufficientFunds                   | `ChannelDeclined` insufficient_funds         |
| pm_card_chargeDeclinedExpiredCard                         | `ChannelDeclined` expired_card               |
| pm_card_chargeDeclinedIncorrectCvc                        | `ChannelDeclined` incorrect_cvc              |
| pm_card_chargeDeclinedFraudulent                          | `ChannelDeclined` fraudulent                 |
| pm_card_chargeDeclinedProcessingError                     | `ChannelDeclined` processing_error           |
| a contract reference from `sign_contract` (sbx_ct_…)      | succeeded                                    |
| any other                                                 | `ChannelInvalidRequest` resource_missing     |

| product                  | outcome                                                                        |
| ------------------------ | ------------------------------------------------------------------------------ |
| card                     | by payment method (required)                                                   |
| alipay_qr, wechat_pay    | processing, with a `display_qr` next action; `simulate_payer` pays (or not)    |
| bank_transfer            | processing, with `bank_transfer_instructions`; `simulate_payer` as above       |
| face_pay, wallet_balance | succeeded, once the product's elements (terminal_id, face_code, ...) are given |

Payouts are always paid, arriving the day they are made (the amount table above is for charges only: no
payout times out or finds the channel unavailable by its amount); `query_payout` finds one by its reference
or by the idempotency key it was made with, and a key no payout was made with is `ChannelInvalidRequest`
resource_missing, as for `query`.

Charges, refunds, payouts, contracts and statements live in Redis (`payments.channels.sandbox_store`: the
app's `REDIS_URL`), scoped by channel account and kept 7 days, so the web process, the RQ worker and
any other process see the same channel: a charge made by the web process that timed out is found by
the worker's `query(idempotency_key=...)`. Every operation that changes something takes an
idempotency key: the same key returns the first answer (concurrent callers, in any process, wait for
it), a key reused with other parameters is refused. Redis out of reach is the channel out of reach:
`ChannelUnavailable` while nothing was done, `ChannelTimeout` once a call may have been.

Credentials: `secret_key` is optional (when set, it must be a test key: sk_test_…); `webhook_secret`
signs notifications, which are JSON signed with HMAC-SHA256 in Stripe's `t=…,v1=…` header format.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

from redis.exceptions import RedisError

from payments.channels.base import (
    CancelRequest,
    Capabilities,
    CaptureMethod,
    CaptureRequest,
    ChannelAdapter,
    ChannelConfig,
    ChannelConfigError,
    ChannelDeclined,
    ChannelInvalidRequest,
    ChannelTimeout,
    ChannelUnavailable,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    ContractRequest,
    ContractResult,
    InvalidNotification,
    Notification,
    PayoutRequest,
    PayoutResult,
    PayoutStatus,
    QueryResult,
    RefundRequest,
    RefundResult,
    RefundStatus,
    Statement,
    StatementLine,
    header,
    sign_payload,
    verified_body,
)
from payments.channels.sandbox_store import STORE, Change, Outcome, SandboxStore
from payments.products import ELEMENTS, PRODUCTS

SPECIAL_MODULUS = 100_000
TIMEOUT_AMOUNT = 4001
UNAVAILABLE_AMOUNT = 5003
SLOW_AMOUNT = 7001

SUCCEEDING_METHODS = frozenset(
    {"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit", "pm_card_unionpay"}
)
DECLINING_METHODS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "pm_card_chargeDeclined": ("generic_decline", "Your card was declined."),
        "pm_card_chargeDeclinedInsufficientFunds": ("insufficient_funds", "Your card has insufficient funds."),
        "pm_card_chargeDeclinedExpiredCard": ("expired_card", "Your card has expired."),
        "pm_card_chargeDeclinedIncorrectCvc": ("incorrect_cvc", "Your card's security code is incorrect."),
        "pm_card_chargeDeclinedFraudulent": ("fraudulent", "Your card was declined."),
        "pm_card_chargeDeclinedProcessingError": (
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    }
)

# The sandbox's own status words (Stripe's PaymentIntent statuses) → ours. Exhaustive: a word not in
# this table is an error, never a guess.
NATIVE_STATUS: Mapping[str, ChargeStatus] = MappingProxyType(
    {
        "succeeded": ChargeStatus.SUCCEEDED,
        "requires_capture": ChargeStatus.REQUIRES_CAPTURE,
        "processing": ChargeStatus.PROCESSING,
        "requires_action": ChargeStatus.PROCESSING,
        "requires_payment_method": ChargeStatus.FAILED,
        "canceled": ChargeStatus.CANCELED,
    }
)

EVENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "succeeded": "charge.succeeded",
        "requires_capture": "charge.authorized",
        "processing": "charge.pending",
        "requires_action": "charge.pending",
        "requires_payment_method": "charge.failed",
        "canceled": "charge.canceled",
    }
)

SIGNATURE_HEADER = "Sandbox-Signature"
_SECRET_KEY = re.compile(r"^sk_test_[A-Za-z0-9]{8,}$")
_QR_PRODUCTS = frozenset({"alipay_qr", "wechat_pay"})


def to_charge_status(native: str) -> ChargeStatus:
    try:
        return NATIVE_STATUS[native]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sandbox status {native!r}") from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_reference(kind: str) -> str:
    return f"sbx_{kind}_{uuid.uuid4().hex[:24]}"


# --- the sandbox's records ----------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


@dataclass
class _Charge:
    reference: str
    idempotency_key: str
    product: str
    amount: int
    currency: str
    capture_method: CaptureMethod
    payment_method: str | None
    status: str
    created: datetime
    description: str = ""
    failure_code: str | None = None
    failure_message: str | None = None
    next_action: Mapping[str, str] | None = None
    succeeded_at: datetime | None = None
    amount_captured: int = 0
    amount_refunded: int = 0

    def record(self) -> dict[str, Any]:
        """The charge as the store keeps it (JSON)."""
        return {
            **{name: getattr(self, name) for name in _CHARGE_FIELDS},
            "capture_method": str(self.capture_method),
            "created": _iso(self.created),
            "succeeded_at": _iso(self.succeeded_at),
            "next_action": dict(self.next_action) if self.next_action is not None else None,
        }

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> _Charge:
        return cls(
            **{name: record[name] for name in _CHARGE_FIELDS},
            capture_method=CaptureMethod(record["capture_method"]),
            created=_moment(record["created"]),
            succeeded_at=_moment(record["succeeded_at"]),
            next_action=record["next_action"],
        )


_CHARGE_FIELDS = tuple(
    name
    for name in _Charge.__dataclass_fields__
    if name not in ("capture_method", "created", "succeeded_at", "next_action")
)


def _line(
    kind: str, reference: str, amount: int, currency: str, at: datetime, charge: str, ours: str
) -> dict[str, Any]:
    """A statement line as the store keeps it (JSON)."""
    return {
        "reference": reference,
        "kind": kind,
        "amount": amount,
        "currency": currency,
        "fee": 0,
        "occurred_at": _iso(at),
        "charge_reference": charge,
        "our_reference": ours,
    }


# --- the adapter ---------------------------------------------------------------------------


class SandboxAdapter(ChannelAdapter):
    type_name = "sandbox"
    label = "Sandbox (test channel)"
    capabilities = Capabilities(
        products=frozenset(PRODUCTS),
        manual_capture=True,
        cancel=True,
        refunds=True,
        payouts=True,
        contracts=True,
        notifications=True,
        statements=True,
    )

    def __init__(
        self,
        config: ChannelConfig,
        *,
        store: SandboxStore = STORE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
    ):
        super().__init__(config)
        self._store = store
        self._sleep = sleep
        self._clock = clock
        self.latency_ms = self._setting("latency_ms", 0)
        self.slow_ms = self._setting("slow_ms", 3000)
        self.notification_tolerance_s = self._setting("notification_tolerance_s", 300, minimum=1)

    def _setting(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self.config.settings.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ChannelConfigError(
                f"channel {self.channel}: setting {name} must be a whole number of at least {minimum}, "
                f"got {value!r}; fix it in Console → Channels → {self.config.name}",
                channel=self.channel,
            )
        return value

    # --- plumbing ---

    def _network(self) -> None:
        """The simulated round trip: the one place the sandbox waits."""
        if self.latency_ms:
            self._sleep(self.latency_ms / 1000)

    def _invalid(self, code: str, message: str) -> ChannelInvalidRequest:
        return ChannelInvalidRequest(f"channel {self.channel}: {message}", channel=self.channel, code=code)

    @contextmanager
    def _reached(self) -> Iterator[None]:
        """A read at the channel: Redis out of reach is a channel out of reach (nothing was done)."""
        try:
            yield
        except RedisError as exc:
            raise ChannelUnavailable(
                f"channel {self.channel} could not be reached ({type(exc).__name__})", channel=self.channel
            ) from exc

    def _missing_charge(self, reference: str) -> ChannelInvalidRequest:
        return self._invalid("resource_missing", f"no charge {reference!r} on this account")

    def _once(self, operation: str, idempotency_key: str, fingerprint: tuple, work: Callable[[Change], Outcome]):
        """Run `work` at the channel once per key (after the simulated network) and answer as it first did."""
        answer, first = self._store.once(
            self.config.id, operation, idempotency_key, fingerprint, work, channel=self.channel, arrive=self._network
        )
        if first is not None:
            raise first
        return self._replay(answer)

    def _charge_in(self, change: Change, reference: str) -> _Charge:
        """The account's charge, read for a change."""
        record = change.charge(reference)
        if record is None:
            raise self._missing_charge(reference)
        return _Charge.of(record)

    def _succeeded(self, change: Change, charge: _Charge, amount: int) -> None:
        charge.status, charge.amount_captured, charge.succeeded_at = "succeeded", amount, self._clock()
        change.add_line(
            _line(
                "charge",
                charge.reference,
                amount,
                charge.currency,
                charge.succeeded_at,
                charge.reference,
                charge.idempotency_key,
            ),
            charge.succeeded_at,
        )

    def _raw(self, charge: _Charge) -> dict[str, Any]:
        return {
            "id": charge.reference,
            "object": "sandbox.charge",
            "status": charge.status,
            "amount": charge.amount,
            "currency": charge.currency.lower(),
            "product": charge.product,
            "payment_method": charge.payment_method,
            "capture_method": str(charge.capture_method),
            "amount_captured": charge.amount_captured,
            "amount_refunded": charge.amount_refunded,
            "failure_code": charge.failure_code,
            "failure_message": charge.failure_message,
            # The key the charge was made with, echoed as channels echo the merchant's order number.
            "idempotency_key": charge.idempotency_key,
            "livemode": False,
        }

    def _result(self, charge: _Charge, cls: type[ChargeResult] = ChargeResult) -> Any:
        extra = (
            {"amount_captured": charge.amount_captured, "amount_refunded": charge.amount_refunded}
            if cls is QueryResult
            else {}
        )
        return cls(
            reference=charge.reference,
            status=to_charge_status(charge.status),
            amount=charge.amount,
            currency=charge.currency,
            failure_code=charge.failure_code,
            failure_message=charge.failure_message,
            next_action=charge.next_action,
            raw=MappingProxyType(self._raw(charge)),
            **extra,
        )

    def _replay(self, answer: Mapping[str, Any]) -> Any:
        """An operation's stored answer as the adapter returns (or raises) it."""
        kind = answer["kind"]
        if kind == "charge":
            return self._result(_Charge.of(answer["charge"]))
        if kind == "declined":
            raise ChannelDeclined(
                f"channel {self.channel} declined the charge: {answer['message']}",
                channel=self.channel,
                decline_code=answer["code"],
                reference=answer["reference"],
            )
        if kind == "refund":
            return RefundResult(
                reference=answer["reference"],
                charge_reference=answer["charge_reference"],
                status=RefundStatus(answer["status"]),
                amount=answer["amount"],
                currency=answer["currency"],
                raw=MappingProxyType(answer["raw"]),
            )
        if kind == "payout":
            return _payout_result(answer)
        if kind == "contract":
            return ContractResult(
                reference=answer["reference"],
                status=answer["status"],
                payer_reference=answer["payer_reference"],
                raw=MappingProxyType(answer["raw"]),
            )
        raise ValueError(f"unknown sandbox answer {kind!r}")

    # --- the contract ---

    def check_credentials(self) -> None:
        if self.config.livemode:
            raise ChannelConfigError(
                f"channel {self.channel} is a sandbox and takes test payments only: turn live mode off, "
                "or choose a real channel type in Console → Channels",
                channel=self.channel,
            )
        # The sandbox needs no key; one that is set must still look like a test key, so that a live key pasted
        # into a sandbox account is caught.
        key = self.config.credentials.get("secret_key")
        if key and not _SECRET_KEY.match(key.reveal()):
            raise ChannelConfigError(
                f"channel {self.channel} rejected the secret key {key}: a sandbox key is sk_test_ followed by at "
                f"least 8 letters or digits; set it in Console → Channels → {self.config.name}",
                channel=self.channel,
            )

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.check_charge_request(request)
        self.check_credentials()
        fingerprint = (
            request.product,
            request.amount,
            request.currency,
            request.payment_method,
            request.capture_method,
            tuple(sorted(request.elements.items())),
        )
        return self._once("charge", request.idempotency_key, fingerprint, lambda c: self._make_charge(request, c))

    def _make_charge(self, request: ChargeRequest, change: Change) -> Outcome:
        special = request.amount % SPECIAL_MODULUS
        if special == UNAVAILABLE_AMOUNT:
            raise ChannelUnavailable(
                f"channel {self.channel} answered 503 before accepting the charge; nothing was charged",
                channel=self.channel,
            )
        if special == SLOW_AMOUNT:
            self._sleep(self.slow_ms / 1000)

        reference = _new_reference("ch")
        status, decline, next_action = self._decide(request, reference)
        charge = _Charge(
            reference=reference,
            idempotency_key=request.idempotency_key,
            product=request.product,
            amount=request.amount,
            currency=request.currency,
            capture_method=request.capture_method,
            payment_method=request.payment_method,
            status=status,
            created=self._clock(),
            description=request.description,
            failure_code=decline[0] if decline else None,
            failure_message=decline[1] if decline else None,
            next_action=next_action,
        )
        if status == "succeeded":
            self._succeeded(change, charge, request.amount)
        change.put_charge(charge.record(), new=True)
        if decline:
            answer = {"kind": "declined", "code": decline[0], "message": decline[1], "reference": reference}
        else:
            answer = {"kind": "charge", "charge": charge.record()}
        first = None
        if special == TIMEOUT_AMOUNT:
            first = ChannelTimeout(
                f"channel {self.channel} did not answer in time; the outcome is unknown until queried",
                channel=self.channel,
                idempotency_key=request.idempotency_key,
            )
        return Outcome(answer, first)

    def _decide(self, request: ChargeRequest, reference: str):
        """(sandbox status, (decline code, message) or None, next action) for a charge that reached the channel."""
        given = set(request.elements) | ({"payment_method"} if request.payment_method else set())
        missing = sorted(PRODUCTS[request.product].required_elements - given)
        if missing:
            labels = ", ".join(ELEMENTS.get(m, m) for m in missing)
            raise self._invalid("missing_elements", f"{PRODUCTS[request.product].label} needs: {labels}")
        method = request.payment_method
        approved = "requires_capture" if request.capture_method is CaptureMethod.MANUAL else "succeeded"
        if method is not None and method.startswith("sbx_ct_"):
            if self._store.contract(self.config.id, method) is None:
                raise self._invalid("resource_missing", f"no contract {method!r} on this account")
            return approved, None, None
        if request.product == "card":
            if method in SUCCEEDING_METHODS:
                return approved, None, None
            if method in DECLINING_METHODS:
                return "requires_payment_method", DECLINING_METHODS[method], None
            raise self._invalid("resource_missing", f"no such payment method {method!r}")
        if request.product in _QR_PRODUCTS:
            return "requires_action", None, {"type": "display_qr", "qr_url": f"https://sandbox.invalid/qr/{reference}"}
        if request.product == "bank_transfer":
            instructions = {"type": "bank_transfer_instructions", "reference_code": reference[-10:].upper()}
            return "requires_action", None, instructions
        return approved, None, None

    def query(self, reference: str | None = None, *, idempotency_key: str | None = None) -> QueryResult:
        if (reference is None) == (idempotency_key is None):
            raise ValueError("query needs exactly one of reference or idempotency_key")
        self.check_credentials()
        self._network()
        with self._reached():
            record = (
                self._store.charge_for_key(self.config.id, idempotency_key)
                if reference is None
                else self._store.charge(self.config.id, reference)
            )
        if reference is None:
            if record is None:
                raise self._invalid(
                    "resource_missing",
                    f"no charge was made with idempotency key {idempotency_key!r}: the channel never took it",
                )
        elif record is None:
            raise self._missing_charge(reference)
        return self._result(_Charge.of(record), QueryResult)

    def capture(self, request: CaptureRequest) -> ChargeResult:
        self.check_credentials()

        def work(change: Change) -> Outcome:
            charge = self._charge_in(change, request.reference)
            if charge.status != "requires_capture":
                raise self._invalid(
                    "charge_not_capturable",
                    f"charge {charge.reference} is {charge.status}; only an uncaptured authorisation is captured",
                )
            amount = charge.amount if request.amount is None else request.amount
            if amount > charge.amount:
                raise self._invalid(
                    "amount_too_large",
                    f"capture of {amount:,} exceeds the {charge.amount:,} authorised on {charge.reference}",
                )
            self._succeeded(change, charge, amount)
            change.put_charge(charge.record())
            return Outcome({"kind": "charge", "charge": charge.record()})

        return self._once("capture", request.idempotency_key, (request.reference, request.amount), work)

    def cancel(self, request: CancelRequest) -> ChargeResult:
        self.check_credentials()

        def work(change: Change) -> Outcome:
            charge = self._charge_in(change, request.reference)
            if charge.status not in ("requires_capture", "requires_action", "processing"):
                raise self._invalid(
                    "charge_not_cancelable",
                    f"charge {charge.reference} is {charge.status}; only an open charge can be cancelled",
                )
            charge.status, charge.next_action = "canceled", None
            change.put_charge(charge.record())
            return Outcome({"kind": "charge", "charge": charge.record()})

        return self._once("cancel", request.idempotency_key, (request.reference,), work)

    def refund(self, request: RefundRequest) -> RefundResult:
        self.check_credentials()

        def work(change: Change) -> Outcome:
            charge = self._charge_in(change, request.reference)
            if charge.status != "succeeded":
                raise self._invalid(
                    "charge_not_refundable", f"charge {charge.reference} is {charge.status}; nothing to refund"
                )
            left = charge.amount_captured - charge.amount_refunded
            amount = left if request.amount is None else request.amount
            if left == 0:
                raise self._invalid("charge_already_refunded", f"charge {charge.reference} is fully refunded")
            if amount > left:
                raise self._invalid(
                    "amount_too_large",
                    f"refund of {amount:,} exceeds the {left:,} left to refund on charge {charge.reference}",
                )
            reference, now = _new_reference("re"), self._clock()
            charge.amount_refunded += amount
            change.put_charge(charge.record())
            change.add_line(
                _line("refund", reference, -amount, charge.currency, now, charge.reference, request.idempotency_key),
                now,
            )
            raw = {"id": reference, "object": "sandbox.refund", "charge": charge.reference, "amount": amount}
            return Outcome(
                {
                    "kind": "refund",
                    "reference": reference,
                    "charge_reference": charge.reference,
                    "status": str(RefundStatus.SUCCEEDED),
                    "amount": amount,
                    "currency": charge.currency,
                    "raw": raw,
                }
            )

        return self._once("refund", request.idempotency_key, (request.reference, request.amount), work)

    def payout(self, request: PayoutRequest) -> PayoutResult:
        self.check_credentials()

        def work(change: Change) -> Outcome:
            reference = _new_reference("po")
            raw = {
                "id": reference,
                "object": "sandbox.payout",
                "amount": request.amount,
                "destination_last4": request.destination[-4:],
            }
            answer = {
                "kind": "payout",
                "reference": reference,
                "status": str(PayoutStatus.PAID),
                "amount": request.amount,
                "currency": request.currency,
                "arrival_date": self._clock().date().isoformat(),
                "raw": raw,
            }
            # Kept with the key it was made with, for query_payout: the answer itself is kept per key only.
            change.put_payout({**answer, "idempotency_key": request.idempotency_key})
            return Outcome(answer)

        fingerprint = (request.amount, request.currency, request.destination)
        return self._once("payout", request.idempotency_key, fingerprint, work)

    def query_payout(self, reference: str | None = None, *, idempotency_key: str | None = None) -> PayoutResult:
        if (reference is None) == (idempotency_key is None):
            raise ValueError("query_payout needs exactly one of reference or idempotency_key")
        self.check_credentials()
        self._network()
        with self._reached():
            record = (
                self._store.payout_for_key(self.config.id, idempotency_key)
                if reference is None
                else self._store.payout(self.config.id, reference)
            )
        if record is None:
            if reference is None:
                raise self._invalid(
                    "resource_missing",
                    f"no payout was made with idempotency key {idempotency_key!r}: the channel never received it",
                )
            raise self._invalid("resource_missing", f"no payout {reference!r} on this account")
        return _payout_result(record)

    def sign_contract(self, request: ContractRequest) -> ContractResult:
        self.check_credentials()

        def work(change: Change) -> Outcome:
            reference = _new_reference("ct")
            answer = {
                "kind": "contract",
                "reference": reference,
                "status": "active",
                "payer_reference": request.payer_reference,
                "raw": {"id": reference, "object": "sandbox.contract", "product": request.product},
            }
            change.put_contract(answer)
            return Outcome(answer)

        return self._once("contract", request.idempotency_key, (request.payer_reference, request.product), work)

    def fetch_statement(self, day: date) -> Statement:
        """The day's money movements (UTC days): captured charges positive, refunds negative, no fees."""
        self.check_credentials()
        self._network()
        with self._reached():
            stored = self._store.statement(self.config.id, day)
        lines = [StatementLine(**{**line, "occurred_at": _moment(line["occurred_at"])}) for line in stored]
        lines.sort(key=lambda line: (line.occurred_at, line.reference))
        return Statement(channel_id=self.config.id, day=day, lines=tuple(lines))

    # --- notifications ---

    def notification_for(self, reference: str, *, event_type: str | None = None) -> tuple[dict[str, str], bytes]:
        """The signed notification the sandbox sends about the charge's current state: what a webhook
        endpoint receives. `event_type` overrides the type derived from the status (e.g. charge.refunded)."""
        secret = self.credential("webhook_secret")
        now = self._clock()
        record = self._store.charge(self.config.id, reference)
        if record is None:
            raise self._missing_charge(reference)
        charge = _Charge.of(record)
        event = {
            "id": _new_reference("evt"),
            "type": event_type or EVENT_TYPES[charge.status],
            "created": int(now.timestamp()),
            "livemode": False,
            "data": {"object": self._raw(charge)},
        }
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(secret, body, event["created"])}
        return headers, body

    def simulate_payer(self, reference: str, *, pays: bool = True) -> tuple[dict[str, str], bytes]:
        """The payer scans the QR code (or sends the transfer) and pays, or walks away; returns the notification."""
        self.credential("webhook_secret")

        def work(change: Change) -> None:
            charge = self._charge_in(change, reference)
            if charge.status != "requires_action":
                raise self._invalid(
                    "charge_not_pending", f"charge {reference} is {charge.status}, not waiting for the payer"
                )
            if pays:
                self._succeeded(change, charge, charge.amount)
            else:
                charge.status = "requires_payment_method"
                charge.failure_code, charge.failure_message = "payer_abandoned", "The payer did not pay."
            charge.next_action = None
            change.put_charge(charge.record())

        self._store.update(self.config.id, work)
        return self.notification_for(reference)

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        body = verified_body(
            self.channel,
            self.credential("webhook_secret"),
            header(headers, SIGNATURE_HEADER),
            body,
            now=self._clock().timestamp(),
            tolerance=self.notification_tolerance_s,
        )
        try:
            event = json.loads(body)
            obj = event["data"]["object"]
            event_id, event_type, reference = event["id"], event["type"], obj["id"]
            status = to_charge_status(obj["status"])
            amount, currency, created = obj["amount"], obj["currency"], event["created"]
            if not all(isinstance(v, str) for v in (event_id, event_type, reference, currency)):
                raise ValueError("ids, type and currency must be strings")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (amount, created)):
                raise ValueError("amount and created must be integers")
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidNotification(
                f"notification for channel {self.channel} is not a sandbox event: {exc}", channel=self.channel
            ) from None
        return Notification(
            event_id=event_id,
            type=event_type,
            reference=reference,
            status=status,
            amount=amount,
            currency=currency.upper(),
            failure_code=obj.get("failure_code"),
            failure_message=_optional_text(obj.get("failure_message")),
            our_reference=_optional_text(obj.get("idempotency_key")),
            occurred_at=datetime.fromtimestamp(created, UTC),
            raw=MappingProxyType({"id": event_id, "type": event_type, "object": obj}),
        )


def _payout_result(record: Mapping[str, Any]) -> PayoutResult:
    """A payout as the store keeps it (an operation's answer, or the payout's own record) as our result."""
    return PayoutResult(
        reference=record["reference"],
        status=PayoutStatus(record["status"]),
        amount=record["amount"],
        currency=record["currency"],
        arrival_date=date.fromisoformat(record["arrival_date"]),
        raw=MappingProxyType(record["raw"]),
    )


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
