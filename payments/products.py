"""The payment products a payer can choose from, as data, and which of them a payment can offer.

A product is what the payer picks (card, Alipay QR, ...); a channel account is who carries it
out. A product is offered for a payment only when at least one usable channel account of the
tenant can take it for that amount and currency; that list becomes a PaymentIntent's
`payment_method_types`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from core.i18n import lazy_gettext

if TYPE_CHECKING:
    from flask_babel.speaklater import LazyString

    from payments.routing import ChannelCandidate

# The payer elements a payment can carry, with the label used when the payer must be asked.
ELEMENTS: Mapping[str, str] = MappingProxyType(
    {
        "payment_method": "Card (tokenised by the channel)",
        "terminal_id": "Terminal",
        "face_code": "Face scan",
        "payer_name": "Payer name",
        "payer_bank_account": "Payer bank account",
        "wallet_id": "Member wallet",
        "openid": "WeChat user id",
        "billing_address": "Billing address",
        "email": "E-mail",
        "phone": "Phone",
    }
)


class UnknownProduct(ValueError):
    def __init__(self, code: str):
        super().__init__(f"unknown payment product {code!r}; known products: {', '.join(PRODUCTS)}")
        self.code = code


# The products' names as pages show them, translated when shown. `label` stays English: it goes
# into routing sentences, channel and API errors and stored records.
TITLES: Mapping[str, LazyString] = MappingProxyType(
    {
        "card": lazy_gettext("Card"),
        "alipay_qr": lazy_gettext("Alipay QR"),
        "wechat_pay": lazy_gettext("WeChat Pay"),
        "face_pay": lazy_gettext("Face pay"),
        "bank_transfer": lazy_gettext("Bank transfer"),
        "wallet_balance": lazy_gettext("Wallet balance"),
    }
)


@dataclass(frozen=True)
class PaymentProduct:
    code: str
    label: str
    required_elements: frozenset[str]
    manual_capture: bool
    refunds: bool

    @property
    def title(self) -> str:
        """The product's name in the reader's language (`label` in English)."""
        return str(TITLES.get(self.code, self.label))


_CATALOGUE = (
    PaymentProduct("card", "Card", frozenset({"payment_method"}), manual_capture=True, refunds=True),
    # The channel returns a QR code for the payer to scan: nothing is needed from the payer up front.
    PaymentProduct("alipay_qr", "Alipay QR", frozenset(), manual_capture=False, refunds=True),
    # Native (QR) WeChat Pay needs nothing; a JSAPI channel adds `openid` to its own required elements.
    PaymentProduct("wechat_pay", "WeChat Pay", frozenset(), manual_capture=False, refunds=True),
    PaymentProduct("face_pay", "Face pay", frozenset({"terminal_id", "face_code"}), manual_capture=False, refunds=True),
    # The payer pushes the money; the name is what matches the incoming transfer to the payment.
    PaymentProduct("bank_transfer", "Bank transfer", frozenset({"payer_name"}), manual_capture=False, refunds=True),
    PaymentProduct("wallet_balance", "Wallet balance", frozenset({"wallet_id"}), manual_capture=False, refunds=True),
)

PRODUCTS: Mapping[str, PaymentProduct] = MappingProxyType({p.code: p for p in _CATALOGUE})


def product(code: str) -> PaymentProduct:
    try:
        return PRODUCTS[code]
    except KeyError:
        raise UnknownProduct(code) from None


def offered_products(
    amount: int,
    currency: str,
    candidates: Iterable[ChannelCandidate],
    *,
    excluded_channel_ids: Iterable[str] = (),
    forced_channel_id: str | None = None,
) -> list[PaymentProduct]:
    """The products, in catalogue order, that at least one usable candidate can take for this amount.

    Usable means what the router would accept before looking at the payer's elements: active,
    healthy, serving the product and currency, limits admitting the amount, not excluded, and the
    forced channel when one is forced. Missing payer elements do not hide a product, because the
    payer can still be asked for them.
    """
    excluded = {str(c) for c in excluded_channel_ids}
    forced = None if forced_channel_id is None else str(forced_channel_id)
    usable = [c for c in candidates if c.id not in excluded and (forced is None or c.id == forced)]
    return [p for p in _CATALOGUE if any(c.screen(p.code, amount, currency) is None for c in usable)]
