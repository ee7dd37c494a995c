"""The sandbox channel: deterministic, in-process, through the same contract as a real channel.

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

Charges, refunds, payouts and contracts live in a process-wide, thread-safe `SandboxStore`,
scoped by channel account. Every operation that changes something takes an idempotency key: the
same key returns the first answer (concurrent callers wait for it), a key reused with other
parameters is refused. The store is memory of this process only: another process (an RQ worker)
does not see the charges made here.

Credentials: `secret_key` is optional (when set, it must be a test key: sk_test_…); `webhook_secret`
signs notifications, which are JSON signed with HMAC-SHA256 in Stripe's `t=…,v1=…` header format.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

from payments.channels.base import (
    CancelRequest,
    Capabilities,
    CaptureMethod,
    CaptureRequest,
    ChannelAdapter,
    ChannelConfig,
    ChannelConfigError,
    ChannelDeclined,
    ChannelError,
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


# --- the sandbox's memory ------------------------------------------------------------------


@dataclass
class _Charge:
    account_id: str
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


@dataclass
class _Refund:
    reference: str
    charge_reference: str
    idempotency_key: str
    amount: int
    currency: str
    created: datetime


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Done:
    fingerprint: tuple
    replay: Callable[[], Any]


@dataclass
class _Outcome:
    """`replay` answers this call and every later call with the same key; `first` is raised to this call only
    (a timeout: the channel did the work but the caller never heard back)."""

    replay: Callable[[], Any]
    first: ChannelError | None = None


class SandboxStore:
    """What the sandbox 'channel' has done, per channel account. One lock guards it; no call sleeps under it."""

    def __init__(self):
        self.lock = threading.Lock()
        self._answers: dict[tuple[str, str, str], _Pending | _Done] = {}
        self.charges: dict[tuple[str, str], _Charge] = {}
        self.charge_by_key: dict[tuple[str, str], str] = {}
        self.refunds: dict[str, list[_Refund]] = {}
        self.payouts: dict[tuple[str, str], PayoutResult] = {}
        self.contracts: dict[tuple[str, str], ContractResult] = {}

    def once(self, key: tuple[str, str, str], fingerprint: tuple, work: Callable[[], _Outcome], *, channel: str):
        """Run `work` once per idempotency key; later and concurrent callers get the first answer."""
        while True:
            with self.lock:
                entry = self._answers.get(key)
                if entry is None:
                    pending = _Pending()
                    self._answers[key] = pending
                    break
            if isinstance(entry, _Pending):
                entry.done.wait()
                continue
            if entry.fingerprint != fingerprint:
                raise ChannelInvalidRequest(
                    f"channel {channel}: idempotency key {key[2]!r} was already used for a {key[1]} "
                    "with other parameters",
                    channel=channel,
                    code="idempotency_key_reused",
                )
            return entry.replay()
        try:
            outcome = work()
        except BaseException:
            # Nothing was recorded at the channel, so the key is free for a retry.
            with self.lock:
                del self._answers[key]
            pending.done.set()
            raise
        with self.lock:
            self._answers[key] = _Done(fingerprint, outcome.replay)
        pending.done.set()
        if outcome.first is not None:
            raise outcome.first
        return outcome.replay()


STORE = SandboxStore()


def _returns(value: Any) -> Callable[[], Any]:
    return lambda: value


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

    def _once(self, operation: str, idempotency_key: str, fingerprint: tuple, work: Callable[[], _Outcome]):
        key = (self.config.id, operation, idempotency_key)
        return self._store.once(key, fingerprint, work, channel=self.channel)

    def _charge_at(self, reference: str) -> _Charge:
        """The account's charge; call with the store's lock held."""
        charge = self._store.charges.get((self.config.id, reference))
        if charge is None:
            raise self._invalid("resource_missing", f"no charge {reference!r} on this account")
        return charge

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

    # --- the contract ---

    def check_credentials(self) -> None:
        if self.config.livemode:
            raise ChannelConfigError(
                f"channel {self.channel} is a sandbox and takes test payments only: turn live mode off, "
                "or choose a real channel type in Console → Channels",
                channel=self.channel,
            )
        # The sandbox runs in this process and needs no key; one that is set must still look like a test key,
        # so that a live key pasted into a sandbox account is caught.
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
        return self._once("charge", request.idempotency_key, fingerprint, lambda: self._make_charge(request))

    def _make_charge(self, request: ChargeRequest) -> _Outcome:
        self._network()
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
        now = self._clock()
        charge = _Charge(
            account_id=self.config.id,
            reference=reference,
            idempotency_key=request.idempotency_key,
            product=request.product,
            amount=request.amount,
            currency=request.currency,
            capture_method=request.capture_method,
            payment_method=request.payment_method,
            status=status,
            created=now,
            description=request.description,
            failure_code=decline[0] if decline else None,
            failure_message=decline[1] if decline else None,
            next_action=next_action,
            succeeded_at=now if status == "succeeded" else None,
            amount_captured=request.amount if status == "succeeded" else 0,
        )
        with self._store.lock:
            self._store.charges[(self.config.id, reference)] = charge
            self._store.charge_by_key[(self.config.id, request.idempotency_key)] = reference
            result = self._result(charge)

        if decline:
            code, message = decline

            def replay():
                raise ChannelDeclined(
                    f"channel {self.channel} declined the charge: {message}",
                    channel=self.channel,
                    decline_code=code,
                    reference=reference,
                )

        else:
            replay = _returns(result)
        first = None
        if special == TIMEOUT_AMOUNT:
            first = ChannelTimeout(
                f"channel {self.channel} did not answer in time; the outcome is unknown until queried",
                channel=self.channel,
                idempotency_key=request.idempotency_key,
            )
        return _Outcome(replay, first)

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
            with self._store.lock:
                known = (self.config.id, method) in self._store.contracts
            if not known:
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
        with self._store.lock:
            if reference is None:
                reference = self._store.charge_by_key.get((self.config.id, idempotency_key))
                if reference is None:
                    raise self._invalid(
                        "resource_missing",
                        f"no charge was made with idempotency key {idempotency_key!r}: the channel never took it",
                    )
            return self._result(self._charge_at(reference), QueryResult)

    def capture(self, request: CaptureRequest) -> ChargeResult:
        self.check_credentials()

        def work() -> _Outcome:
            self._network()
            with self._store.lock:
                charge = self._charge_at(request.reference)
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
                charge.status, charge.amount_captured, charge.succeeded_at = "succeeded", amount, self._clock()
                return _Outcome(_returns(self._result(charge)))

        return self._once("capture", request.idempotency_key, (request.reference, request.amount), work)

    def cancel(self, request: CancelRequest) -> ChargeResult:
        self.check_credentials()

        def work() -> _Outcome:
            self._network()
            with self._store.lock:
                charge = self._charge_at(request.reference)
                if charge.status not in ("requires_capture", "requires_action", "processing"):
                    raise self._invalid(
                        "charge_not_cancelable",
                        f"charge {charge.reference} is {charge.status}; only an open charge can be cancelled",
                    )
                charge.status, charge.next_action = "canceled", None
                return _Outcome(_returns(self._result(charge)))

        return self._once("cancel", request.idempotency_key, (request.reference,), work)

    def refund(self, request: RefundRequest) -> RefundResult:
        self.check_credentials()

        def work() -> _Outcome:
            self._network()
            with self._store.lock:
                charge = self._charge_at(request.reference)
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
                refund = _Refund(
                    _new_reference("re"),
                    charge.reference,
                    request.idempotency_key,
                    amount,
                    charge.currency,
                    self._clock(),
                )
                charge.amount_refunded += amount
                self._store.refunds.setdefault(self.config.id, []).append(refund)
                result = RefundResult(
                    reference=refund.reference,
                    charge_reference=charge.reference,
                    status=RefundStatus.SUCCEEDED,
                    amount=amount,
                    currency=charge.currency,
                    raw=MappingProxyType(
                        {
                            "id": refund.reference,
                            "object": "sandbox.refund",
                            "charge": charge.reference,
                            "amount": amount,
                        }
                    ),
                )
                return _Outcome(_returns(result))

        return self._once("refund", request.idempotency_key, (request.reference, request.amount), work)

    def payout(self, request: PayoutRequest) -> PayoutResult:
        self.check_credentials()

        def work() -> _Outcome:
            self._network()
            reference = _new_reference("po")
            result = PayoutResult(
                reference=reference,
                status=PayoutStatus.PAID,
                amount=request.amount,
                currency=request.currency,
                arrival_date=self._clock().date(),
                raw=MappingProxyType(
                    {
                        "id": reference,
                        "object": "sandbox.payout",
                        "amount": request.amount,
                        "destination_last4": request.destination[-4:],
                    }
                ),
            )
            with self._store.lock:
                self._store.payouts[(self.config.id, reference)] = result
            return _Outcome(_returns(result))

        fingerprint = (request.amount, request.currency, request.destination)
        return self._once("payout", request.idempotency_key, fingerprint, work)

    def sign_contract(self, request: ContractRequest) -> ContractResult:
        self.check_credentials()

        def work() -> _Outcome:
            self._network()
            reference = _new_reference("ct")
            result = ContractResult(
                reference=reference,
                status="active",
                payer_reference=request.payer_reference,
                raw=MappingProxyType({"id": reference, "object": "sandbox.contract", "product": request.product}),
            )
            with self._store.lock:
                self._store.contracts[(self.config.id, reference)] = result
            return _Outcome(_returns(result))

        return self._once("contract", request.idempotency_key, (request.payer_reference, request.product), work)

    def fetch_statement(self, day: date) -> Statement:
        """The day's money movements (UTC days): captured charges positive, refunds negative, no fees."""
        self.check_credentials()
        self._network()
        lines = []
        with self._store.lock:
            for (account_id, _), charge in self._store.charges.items():
                if account_id == self.config.id and charge.succeeded_at and charge.succeeded_at.date() == day:
                    lines.append(
                        StatementLine(
                            reference=charge.reference,
                            kind="charge",
                            amount=charge.amount_captured,
                            currency=charge.currency,
                            fee=0,
                            occurred_at=charge.succeeded_at,
                            charge_reference=charge.reference,
                            our_reference=charge.idempotency_key,
                        )
                    )
            for refund in self._store.refunds.get(self.config.id, []):
                if refund.created.date() == day:
                    lines.append(
                        StatementLine(
                            reference=refund.reference,
                            kind="refund",
                            amount=-refund.amount,
                            currency=refund.currency,
                            fee=0,
                            occurred_at=refund.created,
                            charge_reference=refund.charge_reference,
                            our_reference=refund.idempotency_key,
                        )
                    )
        lines.sort(key=lambda line: (line.occurred_at, line.reference))
        return Statement(channel_id=self.config.id, day=day, lines=tuple(lines))

    # --- notifications ---

    def notification_for(self, reference: str, *, event_type: str | None = None) -> tuple[dict[str, str], bytes]:
        """The signed notification the sandbox sends about the charge's current state: what a webhook
        endpoint receives. `event_type` overrides the type derived from the status (e.g. charge.refunded)."""
        secret = self.credential("webhook_secret")
        now = self._clock()
        with self._store.lock:
            charge = self._charge_at(reference)
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
        with self._store.lock:
            charge = self._charge_at(reference)
            if charge.status != "requires_action":
                raise self._invalid(
                    "charge_not_pending", f"charge {reference} is {charge.status}, not waiting for the payer"
                )
            if pays:
                charge.status, charge.amount_captured, charge.succeeded_at = "succeeded", charge.amount, self._clock()
            else:
                charge.status = "requires_payment_method"
                charge.failure_code, charge.failure_message = "payer_abandoned", "The payer did not pay."
            charge.next_action = None
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
            occurred_at=datetime.fromtimestamp(created, UTC),
            raw=MappingProxyType({"id": event_id, "type": event_type, "object": obj}),
        )
