"""The channel adapter contract: provider-neutral data in, data out, typed errors.

Every channel (the sandbox, Stripe, a bank, a wallet provider) is one `ChannelAdapter`
subclass. It speaks our vocabulary at its edges: amounts are integers in minor units, statuses
are `ChargeStatus` values, and every way a call can go wrong is one of the errors below, each of
which says whether money may have moved:

| error                   | money moved?  | what the caller does                                        |
| ----------------------- | ------------- | ----------------------------------------------------------- |
| `ChannelDeclined`       | no            | fail the attempt with the decline code; do not fail over    |
| `ChannelUnavailable`    | no            | try the next routing candidate (`fail_over` is True)        |
| `ChannelTimeout`        | unknown       | keep the attempt processing; resolve it with `query` (a     |
|                         |               | charge) or `query_payout` (a payout) by our idempotency     |
|                         |               | key, never by charging or paying out again                  |
| `ChannelInvalidRequest` | no            | a bug or a state conflict (refund too large...): show it    |
| `ChannelNotSupported`   | no            | the operation does not exist on this channel type           |
| `ChannelConfigError`    | no            | the account's credentials or settings need fixing           |
| `InvalidNotification`   | n/a           | reject the notification (signature, format)                 |

Credentials travel as `Secret`, which never prints its value.

Test instruments: in test mode the API takes Stripe's documented test payment methods
(`pm_card_visa`, `pm_card_chargeDeclined`, `pm_card_chargeDeclinedInsufficientFunds`, ...:
every name starting `pm_card_`, `is_test_payment_method`) whatever the routed channel is, and
`ChannelAdapter.test_instrument` maps one to what that channel itself accepts as its test
instrument (default: the same name). The caller applies it only to test-mode payments; a live
payment never gets a test method mapped (the API refuses test methods in live mode).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from payments.products import PRODUCTS, product

TEST_PAYMENT_METHOD_PREFIX = "pm_card_"


def is_test_payment_method(payment_method: str | None) -> bool:
    """One of Stripe's documented test payment methods (pm_card_visa, pm_card_chargeDeclined...)."""
    return isinstance(payment_method, str) and payment_method.startswith(TEST_PAYMENT_METHOD_PREFIX)


# --- secrets -------------------------------------------------------------------------------

# The kind and mode of a key (sk_test_, rk_live_, whsec_): public knowledge, and what a person needs to tell keys apart.
_SECRET_PREFIX = re.compile(r"^[a-z]{2,5}_(?:(?:test|live)_)?")


class Secret:
    """A credential. str(), repr(), f-strings and logging show only a masked form; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise TypeError("a Secret wraps a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        """Keeps the kind prefix (`sk_test_`) and, when at least 12 characters stay hidden, the last four."""
        value = self._value
        if not value:
            return "(empty)"
        match = _SECRET_PREFIX.match(value)
        prefix = match.group(0) if match and len(value) - match.end() >= 8 else ""
        hidden = len(value) - len(prefix)
        tail = value[-4:] if hidden >= 16 else ""
        return f"{prefix}…{tail}"

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo) -> Secret:
        return self

    def __reduce_ex__(self, protocol):
        # Pickles end up in Redis job payloads and caches: jobs carry the channel account id instead.
        raise TypeError("a Secret is never pickled: pass the channel account id and load its credentials")


# --- vocabulary ----------------------------------------------------------------------------


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    REQUIRES_CAPTURE = "requires_capture"
    PROCESSING = "processing"
    FAILED = "failed"
    CANCELED = "canceled"


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class RefundStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PENDING = "pending"
    FAILED = "failed"


class PayoutStatus(StrEnum):
    PAID = "paid"
    PENDING = "pending"
    FAILED = "failed"


def check_amount(value: Any, what: str = "amount") -> int:
    # bool is an int in Python; a True amount is always a bug upstream.
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive integer in minor units, got {value!r}")
    return value


def check_currency(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 3 or not value.isascii() or not value.isalpha():
        raise ValueError(f"currency must be an ISO 4217 code such as 'EUR', got {value!r}")
    return value.upper()


def _frozen_map(value: Mapping | None) -> Mapping:
    return MappingProxyType(dict(value or {}))


def _check_key(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise ValueError(f"idempotency_key must be a non-empty string of at most 255 characters, got {value!r}")
    return value


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    """One channel account as an adapter needs it. Plain strings given as credentials are wrapped in `Secret`."""

    id: str
    name: str
    credentials: Mapping[str, Secret] = field(default_factory=dict, hash=False)
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    livemode: bool = False

    def __post_init__(self):
        object.__setattr__(self, "id", str(self.id))
        wrapped = {k: v if isinstance(v, Secret) else Secret(v) for k, v in dict(self.credentials).items()}
        object.__setattr__(self, "credentials", MappingProxyType(wrapped))
        object.__setattr__(self, "settings", _frozen_map(self.settings))


@dataclass(frozen=True)
class Capabilities:
    """What a channel type offers. An operation it does not declare raises `ChannelNotSupported`."""

    products: frozenset[str]
    manual_capture: bool = False
    cancel: bool = False
    refunds: bool = False
    payouts: bool = False
    contracts: bool = False
    notifications: bool = False
    statements: bool = False

    @property
    def result_delivery(self) -> str:
        """How results are learned: every channel can be queried; some also notify."""
        return "notify and poll" if self.notifications else "poll"


# --- requests and results ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChargeRequest:
    """Debit the payer. `payment_method` is the channel's token (or a test method); `elements` carries the
    other payer elements the product needs (terminal_id, face_code, payer_name, ...). The idempotency key is
    sent to the channel: the same key never creates a second charge."""

    amount: int
    currency: str
    idempotency_key: str
    product: str = "card"
    payment_method: str | None = None
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    elements: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        check_amount(self.amount)
        object.__setattr__(self, "currency", check_currency(self.currency))
        _check_key(self.idempotency_key)
        product(self.product)
        object.__setattr__(self, "capture_method", CaptureMethod(self.capture_method))
        object.__setattr__(self, "metadata", _frozen_map(self.metadata))
        object.__setattr__(self, "elements", _frozen_map(self.elements))


@dataclass(frozen=True, kw_only=True)
class ChargeResult:
    """A charge as the channel reports it. `raw` is a summary of the channel's answer that is safe to show
    and store: never credentials, never card data."""

    reference: str
    status: ChargeStatus
    amount: int
    currency: str
    failure_code: str | None = None
    failure_message: str | None = None
    next_action: Mapping[str, str] | None = field(default=None, hash=False)
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, kw_only=True)
class QueryResult(ChargeResult):
    amount_captured: int = 0
    amount_refunded: int = 0


@dataclass(frozen=True, kw_only=True)
class CaptureRequest:
    """Capture an authorisation; `amount` None captures all of it."""

    reference: str
    idempotency_key: str
    amount: int | None = None

    def __post_init__(self):
        _check_key(self.idempotency_key)
        if self.amount is not None:
            check_amount(self.amount)


@dataclass(frozen=True, kw_only=True)
class CancelRequest:
    reference: str
    idempotency_key: str
    reason: str = ""

    def __post_init__(self):
        _check_key(self.idempotency_key)


@dataclass(frozen=True, kw_only=True)
class RefundRequest:
    """Refund a charge; `amount` None refunds what is left of it."""

    reference: str
    idempotency_key: str
    amount: int | None = None
    reason: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        _check_key(self.idempotency_key)
        if self.amount is not None:
            check_amount(self.amount)
        object.__setattr__(self, "metadata", _frozen_map(self.metadata))


@dataclass(frozen=True, kw_only=True)
class RefundResult:
    reference: str
    charge_reference: str
    status: RefundStatus
    amount: int
    currency: str
    failure_code: str | None = None
    failure_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, kw_only=True)
class PayoutRequest:
    """Pay money out to a bank account the channel knows by `destination` (a token, never a raw account number)."""

    amount: int
    currency: str
    destination: str
    idempotency_key: str
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        check_amount(self.amount)
        object.__setattr__(self, "currency", check_currency(self.currency))
        _check_key(self.idempotency_key)
        if not isinstance(self.destination, str) or not self.destination:
            raise ValueError("destination must name the bank account token")
        object.__setattr__(self, "metadata", _frozen_map(self.metadata))


@dataclass(frozen=True, kw_only=True)
class PayoutResult:
    reference: str
    status: PayoutStatus
    amount: int
    currency: str
    arrival_date: date | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, kw_only=True)
class ContractRequest:
    """Sign an agreement (mandate) so that later charges need no payer action."""

    payer_reference: str
    idempotency_key: str
    product: str = "card"
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        _check_key(self.idempotency_key)
        product(self.product)
        object.__setattr__(self, "metadata", _frozen_map(self.metadata))


@dataclass(frozen=True, kw_only=True)
class ContractResult:
    reference: str
    status: str
    payer_reference: str
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, kw_only=True)
class StatementLine:
    """One movement on the channel's statement. `amount` is signed: charges positive, refunds negative;
    `our_reference` is the idempotency key we sent, which is how reconciliation matches the line."""

    reference: str
    kind: str
    amount: int
    currency: str
    fee: int
    occurred_at: datetime
    charge_reference: str
    our_reference: str

    @property
    def net(self) -> int:
        return self.amount - self.fee


@dataclass(frozen=True, kw_only=True)
class Statement:
    channel_id: str
    day: date
    lines: tuple[StatementLine, ...]


@dataclass(frozen=True, kw_only=True)
class Notification:
    """A verified event from the channel. Deduplicate by `event_id`: channels deliver more than once.
    `our_reference` is the idempotency key we sent, when the channel echoes it (as it does on statements)."""

    event_id: str
    type: str
    reference: str | None
    status: ChargeStatus | None
    amount: int | None = None
    currency: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    our_reference: str | None = None
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)


# --- errors --------------------------------------------------------------------------------


class ChannelError(Exception):
    """A channel call went wrong. `channel` names the account; messages never contain credentials."""

    fail_over: ClassVar[bool] = False

    def __init__(self, message: str, *, channel: str):
        super().__init__(message)
        self.message = message
        self.channel = channel


class ChannelDeclined(ChannelError):
    """The channel refused the payment (card declined...). No money was taken."""

    def __init__(self, message: str, *, channel: str, decline_code: str, reference: str | None = None):
        super().__init__(message, channel=channel)
        self.decline_code = decline_code
        self.reference = reference


class ChannelUnavailable(ChannelError):
    """The channel certainly did not take the money (connection refused, 5xx before acceptance)."""

    fail_over = True


class ChannelTimeout(ChannelError):
    """No answer: the outcome is UNKNOWN. Query by the idempotency key; never charge again.

    `idempotency_key` is the key of our request (the one `query` or `query_payout` takes), never a key the
    adapter derived from it for the channel."""

    def __init__(self, message: str, *, channel: str, idempotency_key: str):
        super().__init__(message, channel=channel)
        self.idempotency_key = idempotency_key


class ChannelInvalidRequest(ChannelError):
    """The channel refused the request as invalid (refund too large, unknown reference...); nothing happened."""

    def __init__(self, message: str, *, channel: str, code: str):
        super().__init__(message, channel=channel)
        self.code = code


class ChannelNotSupported(ChannelError):
    def __init__(self, operation: str, *, channel: str):
        super().__init__(f"{operation} is not supported by channel {channel}", channel=channel)
        self.operation = operation


class ChannelConfigError(ChannelError):
    """The account's credentials or settings are wrong; the message says what to set and where."""


class InvalidNotification(ChannelError):
    """A notification failed verification or could not be read; it must be rejected, not processed."""


# --- the contract --------------------------------------------------------------------------

# Which methods each capability promises; checked when an adapter class is defined. A channel that pays out
# also answers what became of a payout, since a payout whose answer was lost is resolved only by asking.
_CAPABILITY_METHODS = {
    "manual_capture": ("capture",),
    "cancel": ("cancel",),
    "refunds": ("refund",),
    "payouts": ("payout", "query_payout"),
    "contracts": ("sign_contract",),
    "notifications": ("parse_notification",),
    "statements": ("fetch_statement",),
}


class ChannelAdapter(abc.ABC):
    """One channel account, seen through the provider-neutral contract.

    An adapter holds one account's credentials: build a fresh one per account
    (`payments.channels.adapter_for`), never share one across tenants.
    """

    type_name: ClassVar[str]
    label: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "capabilities" not in cls.__dict__:
            return
        unknown = sorted(cls.capabilities.products - PRODUCTS.keys())
        if unknown:
            raise TypeError(f"{cls.__name__} declares unknown products: {', '.join(unknown)}")
        for flag, methods in _CAPABILITY_METHODS.items():
            for method in methods:
                if getattr(cls.capabilities, flag) and getattr(cls, method) is getattr(ChannelAdapter, method):
                    raise TypeError(f"{cls.__name__} declares {flag} but does not implement {method}()")

    def __init__(self, config: ChannelConfig):
        self.config = config

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.name!r} ({self.config.id})>"

    @property
    def channel(self) -> str:
        """How errors name this account: `'Sandbox EU' (sandbox)`."""
        return f"{self.config.name!r} ({self.type_name})"

    def credential(self, key: str) -> Secret:
        secret = self.config.credentials.get(key)
        if not secret:
            raise ChannelConfigError(
                f"channel {self.channel} has no {key}: set it in Console → Channels → {self.config.name}",
                channel=self.channel,
            )
        return secret

    def not_supported(self, operation: str) -> ChannelNotSupported:
        return ChannelNotSupported(operation, channel=self.channel)

    def check_charge_request(self, request: ChargeRequest) -> None:
        """Refuse, before any call, what this channel type cannot do: the product, or manual capture."""
        if request.product not in self.capabilities.products:
            raise self.not_supported(f"the product {PRODUCTS[request.product].label}")
        if request.capture_method is CaptureMethod.MANUAL and not (
            self.capabilities.manual_capture and PRODUCTS[request.product].manual_capture
        ):
            raise self.not_supported(f"manual capture of {PRODUCTS[request.product].label}")

    def test_instrument(self, payment_method: str) -> str:
        """This channel's own test instrument for one of Stripe's test payment methods (see the module's
        docstring); any other payment method is returned unchanged. Called for test-mode payments only.
        Default: the same name (the sandbox and Stripe itself know Stripe's test methods)."""
        return payment_method

    @abc.abstractmethod
    def check_credentials(self) -> None:
        """Authenticate with the channel; raise `ChannelConfigError` saying what to fix."""

    @abc.abstractmethod
    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Debit the payer. Returns succeeded, requires_capture or processing; raises on declines and errors."""

    @abc.abstractmethod
    def query(self, reference: str | None = None, *, idempotency_key: str | None = None) -> QueryResult:
        """The charge's current state, by the channel's reference or, after a timeout, by our idempotency key."""

    def capture(self, request: CaptureRequest) -> ChargeResult:
        raise self.not_supported("manual capture")

    def cancel(self, request: CancelRequest) -> ChargeResult:
        raise self.not_supported("cancelling a charge")

    def refund(self, request: RefundRequest) -> RefundResult:
        raise self.not_supported("refunds")

    def payout(self, request: PayoutRequest) -> PayoutResult:
        raise self.not_supported("payouts")

    def query_payout(self, reference: str | None = None, *, idempotency_key: str | None = None) -> PayoutResult:
        """The payout's current state, by the channel's reference or, after a timeout, by our idempotency key
        (exactly one of them). As with `query`, a key the channel never received a payout with raises
        `ChannelInvalidRequest` with code resource_missing: nothing was paid out under it."""
        raise self.not_supported("payouts")

    def sign_contract(self, request: ContractRequest) -> ContractResult:
        raise self.not_supported("contract signing")

    def fetch_statement(self, day: date) -> Statement:
        raise self.not_supported("statement download")

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        raise self.not_supported("notifications")


# --- signed notifications ------------------------------------------------------------------
# Stripe's scheme (`t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`): the timestamp is signed too, so an
# old notification cannot be replayed outside the tolerance window.


def sign_payload(secret: Secret, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.reveal().encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: Secret, header: str | None, body: bytes, *, now: float | None = None, tolerance: int = 300
) -> int:
    """The signed timestamp when `header` is a valid signature of `body`; ValueError saying why otherwise."""
    if not header:
        raise ValueError("the signature header is missing")
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    timestamps = [v for k, v in parts if k.strip() == "t"]
    signatures = [v.strip() for k, v in parts if k.strip() == "v1"]
    if len(timestamps) != 1 or not timestamps[0].strip().isdigit() or not signatures:
        raise ValueError("the signature header is malformed")
    timestamp = int(timestamps[0])
    expected = sign_payload(secret, body, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, s) for s in signatures):
        raise ValueError("the signature does not match the body")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise ValueError(f"the signature is {int(abs(current - timestamp))} seconds old (tolerance {tolerance})")
    return timestamp


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, ignoring case, from any mapping (a dict or Werkzeug's Headers)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verified_body(
    channel: str, secret: Secret, signature: str | None, body: bytes, *, now: float, tolerance: float
) -> bytes:
    """The raw body of a channel notification once its signature checks out.

    The signature covers the exact bytes received, so the body must be passed undecoded.
    """
    if not isinstance(body, bytes | bytearray):
        raise TypeError("pass the notification body as the raw bytes received: the signature covers them")
    body = bytes(body)
    try:
        verify_signature(secret, signature, body, now=now, tolerance=tolerance)
    except ValueError as exc:
        raise InvalidNotification(f"notification for channel {channel} rejected: {exc}", channel=channel) from None
    return body
