"""The business profile a merchant fills in for its KYC review (use cases).

Editable while the merchant's onboarding is `draft` or `changes_requested`; a draft may be saved
half filled, `review.missing` says what a submission still lacks. The payout bank account is set
through `clearing.payouts.set_bank_account` (validated, stored encrypted), in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from clearing import payouts
from clearing.models import MerchantBankAccount
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency, to_minor
from onboarding.models import MerchantProfile
from tenants import audit
from tenants.errors import InvalidInput
from tenants.models import Merchant

EDITABLE = ("draft", "changes_requested")
LIMITS = {"legal_name": 200, "registration_number": 64, "legal_representative": 200, "address": 500}
# clearing's field names -> this form's
BANK_FIELDS = {
    "holder_name": "bank_holder_name",
    "account": "bank_account",
    "bank_code": "bank_code",
    "country": "bank_country",
}


@dataclass
class ProfileInput:
    """What the merchant typed: text, as typed (amounts too: converted exactly here)."""

    legal_name: str = ""
    registration_number: str = ""
    legal_representative: str = ""
    address: str = ""
    country: str = ""
    monthly_volume: str = ""
    volume_currency: str = ""
    bank_holder_name: str = ""
    bank_account: str = ""
    bank_code: str = ""
    bank_name: str = ""
    bank_country: str = ""


def locked_merchant(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> Merchant:
    merchant = db.session.get(Merchant, (tenant_id, merchant_id), with_for_update=True, populate_existing=True)
    if merchant is None:
        raise InvalidInput(gettext("That merchant does not exist."))
    return merchant


def require_editable(merchant: Merchant) -> None:
    if merchant.onboarding_status not in EDITABLE:
        status = merchant.onboarding_status.replace("_", " ")
        db.session.rollback()
        raise InvalidInput(
            gettext(
                "The application is %(status)s: it can be changed only while it is a draft or when changes "
                "are requested.",
                status=status,
            )
        )


def profile_of(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> MerchantProfile | None:
    return db.session.get(MerchantProfile, (tenant_id, merchant_id))


def _volume(amount: str, currency: str) -> tuple[int | None, str | None]:
    amount, currency = (amount or "").strip(), (currency or "").strip()
    if not amount and not currency:
        return None, None
    if not currency:
        raise InvalidInput(gettext("Give the currency of the volume, for example EUR."), "volume_currency")
    try:
        code = normalise_currency(currency)
    except MoneyError as exc:
        raise InvalidInput(str(exc), "volume_currency") from None
    if not amount:
        raise InvalidInput(
            gettext("Give the amount you expect to take each month, for example 25000.00."), "monthly_volume"
        )
    try:
        minor = to_minor(amount, code)
    except MoneyError as exc:
        raise InvalidInput(str(exc), "monthly_volume") from None
    if minor <= 0:
        raise InvalidInput(gettext("The volume must be more than zero."), "monthly_volume")
    if minor > 2**62:
        raise InvalidInput(gettext("That amount is too large."), "monthly_volume")
    return minor, code


def _clean(data: ProfileInput) -> dict:
    values = {}
    for name, limit in LIMITS.items():
        text = " ".join((getattr(data, name) or "").split()) if name != "address" else (data.address or "").strip()
        if len(text) > limit:
            raise InvalidInput(gettext("Use at most %(limit)s characters.", limit=limit), name)
        values[name] = text
    country = (data.country or "").strip().upper()
    if country and (len(country) != 2 or not country.isalpha()):
        raise InvalidInput(gettext("Give the country as two letters, like DE or CN."), "country")
    values["country"] = country
    values["monthly_volume"], values["volume_currency"] = _volume(data.monthly_volume, data.volume_currency)
    return values


def _snapshot(profile: MerchantProfile | None) -> dict:
    if profile is None:
        return {}
    return {
        **{name: getattr(profile, name) for name in MerchantProfile.FIELDS},
        "monthly_volume": profile.monthly_volume,
        "volume_currency": profile.volume_currency,
    }


def save(tenant_id: uuid.UUID, merchant_id: uuid.UUID, data: ProfileInput, actor: audit.Actor) -> MerchantProfile:
    """Save the profile (and the bank account, when one is typed). Raises InvalidInput naming the
    field; nothing is saved then. Commits."""
    try:
        values = _clean(data)
        merchant = locked_merchant(tenant_id, merchant_id)
        require_editable(merchant)
        profile = db.session.get(MerchantProfile, (tenant_id, merchant_id), populate_existing=True)
        before = _snapshot(profile)
        if profile is None:
            profile = MerchantProfile(tenant_id=tenant_id, merchant_id=merchant_id)
            db.session.add(profile)
        for name, value in values.items():
            setattr(profile, name, value)
        profile.updated_at = datetime.now(UTC)
        if (data.bank_account or "").strip():
            try:
                payouts.set_bank_account(
                    tenant_id,
                    merchant_id,
                    holder_name=data.bank_holder_name,
                    account=data.bank_account,
                    bank_code=data.bank_code,
                    bank_name=data.bank_name,
                    country=data.bank_country,
                    actor=actor,
                )
            except InvalidInput as exc:
                raise InvalidInput(exc.message, BANK_FIELDS.get(exc.field or "", exc.field)) from None
        elif (data.bank_holder_name or "").strip() and bank_account_of(tenant_id, merchant_id) is None:
            raise InvalidInput(gettext("Give the account's IBAN or account number."), "bank_account")
        db.session.flush()
        change_set = audit.changes(before, _snapshot(profile))
        if change_set:
            audit.record(tenant_id, actor, "merchant.profile_saved", "merchant", merchant_id, change_set)
    except InvalidInput:
        db.session.rollback()
        raise
    db.session.commit()
    return profile


def bank_account_of(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> MerchantBankAccount | None:
    return payouts.bank_account_of(tenant_id, merchant_id)
