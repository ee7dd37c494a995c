"""Managing a tenant's channel accounts and routing rules (use cases; each commits).

Channel accounts are data: a change is used by the next payment, without a restart.
Credentials are encrypted at rest and never returned, logged or audited in clear; the
console shows only their masked hint.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core import crypto
from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency
from payments.models import CHANNEL_STATUSES, CHANNEL_TYPES, MODES, RULE_ACTIONS, ChannelAccount, RoutingRule
from tenants import audit
from tenants.errors import InvalidInput
from tenants.models import Merchant

# The credentials each channel type needs, and which of them are required.
CREDENTIAL_FIELDS: dict[str, dict[str, bool]] = {
    "stripe": {"secret_key": True, "webhook_secret": False},
    "sandbox": {"webhook_secret": False},
}
DEFAULT_BASE_URLS = {"stripe": "https://api.stripe.com"}
# Fields audited by value; credentials are audited only as "changed".
AUDITED = (
    "settings",
    "name",
    "type",
    "mode",
    "status",
    "base_url",
    "currency",
    "products",
    "min_amount",
    "max_amount",
    "daily_cap",
    "costs",
    "priority",
    "required_elements",
)


@dataclass
class ChannelAccountInput:
    name: str
    type: str
    currency: str
    mode: str = "test"
    status: str = "active"
    base_url: str | None = None
    credentials: dict[str, str] = field(default_factory=dict)
    products: list[str] = field(default_factory=list)
    min_amount: int | None = None
    max_amount: int | None = None
    daily_cap: int | None = None
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    priority: int = 100
    required_elements: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


# Adapter settings a tenant may set, with their type and bounds.
SETTINGS: dict[str, tuple[type, int, int]] = {
    "latency_ms": (int, 0, 30_000),
    "slow_ms": (int, 0, 60_000),
    "connect_timeout_s": (int, 1, 30),
    "read_timeout_s": (int, 1, 120),
}
TEXT_SETTINGS = {"test_instruments": ("stripe", "localstripe")}
# A Stripe account's publishable key: public (the hosted checkout gives it to the payer's browser,
# where Stripe.js tokenises the card), so it is a setting, not a credential.
PUBLISHABLE_KEY = re.compile(r"^pk_(test|live)_[A-Za-z0-9]{8,200}$")


def _clean_settings(given: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (given or {}).items():
        if value in (None, ""):
            continue
        if key == "publishable_key":
            value = str(value).strip()
            if not PUBLISHABLE_KEY.match(value):
                raise InvalidInput(gettext("A publishable key looks like pk_test_… or pk_live_…."), "publishable_key")
            cleaned[key] = value
            continue
        if key in TEXT_SETTINGS:
            if value not in TEXT_SETTINGS[key]:
                raise InvalidInput(
                    gettext(
                        "%(key)s must be one of: %(choices)s.",
                        key=key,
                        choices=", ".join(TEXT_SETTINGS[key]),
                    ),
                    "settings",
                )
            cleaned[key] = value
            continue
        if key not in SETTINGS:
            raise InvalidInput(gettext("Unknown channel setting %(key)s.", key=repr(key)), "settings")
        kind, low, high = SETTINGS[key]
        try:
            number = kind(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(gettext("%(key)s must be a whole number.", key=key), "settings") from exc
        if not low <= number <= high:
            raise InvalidInput(
                gettext("%(key)s must be between %(low)s and %(high)s.", key=key, low=low, high=high), "settings"
            )
        cleaned[key] = number
    return cleaned


def _clean(data: ChannelAccountInput, known_products: set[str], existing: ChannelAccount | None) -> dict[str, Any]:
    name = data.name.strip()
    if not name:
        raise InvalidInput(gettext("Give the channel account a name."), "name")
    if data.type not in CHANNEL_TYPES:
        raise InvalidInput(gettext("Choose a channel type among: %(types)s.", types=", ".join(CHANNEL_TYPES)), "type")
    if data.mode not in MODES:
        raise InvalidInput(gettext("Choose test or live mode."), "mode")
    if data.status not in CHANNEL_STATUSES:
        raise InvalidInput(gettext("Choose active or paused."), "status")
    try:
        currency = normalise_currency(data.currency)
    except MoneyError as exc:
        raise InvalidInput(str(exc), "currency") from exc
    products = sorted(set(data.products))
    unknown = [p for p in products if p not in known_products]
    if unknown:
        raise InvalidInput(gettext("Unknown product: %(unknown)s.", unknown=", ".join(unknown)), "products")
    if not products:
        raise InvalidInput(gettext("Choose at least one product this account serves."), "products")
    for label, value in (
        ("min_amount", data.min_amount),
        ("max_amount", data.max_amount),
        ("daily_cap", data.daily_cap),
    ):
        if value is not None and value < 0:
            raise InvalidInput(gettext("Amounts cannot be negative."), label)
    if data.max_amount is not None and data.min_amount is not None and data.max_amount < data.min_amount:
        raise InvalidInput(gettext("The maximum is below the minimum."), "max_amount")
    if data.max_amount == 0 or data.daily_cap == 0:
        raise InvalidInput(
            gettext("Leave a limit empty for 'no limit'; zero would refuse every payment."),
            "max_amount" if data.max_amount == 0 else "daily_cap",
        )
    costs = {}
    for product in products:
        # A served product without a stated cost costs nothing at this channel.
        cost = data.costs.get(product) or {}
        try:
            percent = Decimal(str(cost.get("percent") or "0"))
        except InvalidOperation as exc:
            raise InvalidInput(
                gettext("The percentage for %(product)s is not a number.", product=product), "costs"
            ) from exc
        fixed = int(cost.get("fixed") or 0)
        if not (Decimal(0) <= percent < Decimal(100)) or fixed < 0:
            raise InvalidInput(
                gettext("The cost for %(product)s must be 0–100 %% and a fixed amount of 0 or more.", product=product),
                "costs",
            )
        costs[product] = {"percent": str(percent.normalize()) if percent else "0", "fixed": fixed}
    base_url = (data.base_url or "").strip().rstrip("/") or DEFAULT_BASE_URLS.get(data.type)
    if base_url and not base_url.startswith(("https://", "http://")):
        raise InvalidInput(
            gettext("The base URL must start with https:// (or http:// for a local test server)."), "base_url"
        )
    credentials = _merge_credentials(data, existing)
    settings = _clean_settings(data.settings)
    publishable = PUBLISHABLE_KEY.match(settings.get("publishable_key", ""))
    if publishable and data.type != "stripe":
        raise InvalidInput(gettext("Only a Stripe account has a publishable key."), "publishable_key")
    if publishable and publishable.group(1) != data.mode:
        raise InvalidInput(
            gettext("A %(mode)s account needs a pk_%(mode)s_… publishable key.", mode=data.mode), "publishable_key"
        )
    return {
        "name": name,
        "type": data.type,
        "mode": data.mode,
        "status": data.status,
        "base_url": base_url,
        "currency": currency,
        "products": products,
        "min_amount": data.min_amount,
        "max_amount": data.max_amount,
        "daily_cap": data.daily_cap,
        "costs": costs,
        "priority": int(data.priority),
        "required_elements": sorted({e.strip() for e in data.required_elements if e.strip()}),
        "settings": settings,
        "_credentials": credentials,
    }


def _merge_credentials(data: ChannelAccountInput, existing: ChannelAccount | None) -> dict[str, str]:
    """Typed values replace stored ones; an empty field keeps what is stored."""
    fields = CREDENTIAL_FIELDS[data.type]
    stored = credentials_of(existing) if existing is not None and existing.type == data.type else {}
    merged = {key: value for key, value in stored.items() if key in fields}
    for key in fields:
        value = (data.credentials.get(key) or "").strip()
        if value:
            merged[key] = value
    missing = [key for key, required in fields.items() if required and not merged.get(key)]
    if missing:
        raise InvalidInput(
            gettext("A %(type)s account needs: %(missing)s.", type=data.type, missing=", ".join(missing)), "credentials"
        )
    return merged


def credentials_of(account: ChannelAccount) -> dict[str, str]:
    """The decrypted credentials of an account (for its adapter only; never log them)."""
    if not account.credentials_encrypted:
        return {}
    return json.loads(crypto.decrypt(account.credentials_encrypted))


def _store_credentials(account: ChannelAccount, credentials: dict[str, str]) -> bool:
    """Encrypt and store when they differ from what is stored; returns whether they changed."""
    if credentials == credentials_of(account):
        return False
    account.credentials_encrypted = crypto.encrypt(json.dumps(credentials, sort_keys=True)) if credentials else None
    account.credentials_hint = ", ".join(f"{key} {crypto.mask(value)}" for key, value in sorted(credentials.items()))
    return True


def _values(account: ChannelAccount) -> dict[str, Any]:
    return {name: getattr(account, name) for name in AUDITED}


def create_channel_account(
    tenant_id: uuid.UUID, data: ChannelAccountInput, known_products: set[str], actor: audit.Actor
) -> ChannelAccount:
    cleaned = _clean(data, known_products, None)
    credentials = cleaned.pop("_credentials")
    account = ChannelAccount(tenant_id=tenant_id, id=uuid.uuid4(), **cleaned)
    _store_credentials(account, credentials)
    db.session.add(account)
    audit.record(
        tenant_id,
        actor,
        "channel_account.created",
        "channel_account",
        account.id,
        {**audit.created(**_values(account)), "credentials": {"after": "set" if credentials else None}},
    )
    _commit_unique_name()
    return account


def update_channel_account(
    account: ChannelAccount, data: ChannelAccountInput, known_products: set[str], actor: audit.Actor
) -> dict[str, Any]:
    """Apply the edit; returns the audited change set (empty when nothing changed)."""
    cleaned = _clean(data, known_products, account)
    credentials = cleaned.pop("_credentials")
    before = _values(account)
    for key, value in cleaned.items():
        setattr(account, key, value)
    diff = audit.changes(before, _values(account))
    if _store_credentials(account, credentials):
        diff["credentials"] = {"before": "set", "after": "changed"}
    if diff:
        audit.record(account.tenant_id, actor, "channel_account.updated", "channel_account", account.id, diff)
    _commit_unique_name()
    return diff


def _commit_unique_name() -> None:
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise InvalidInput(gettext("Another channel account already has this name."), "name") from exc


def get_channel_account(tenant_id: uuid.UUID, account_id: uuid.UUID) -> ChannelAccount | None:
    return db.session.execute(
        sa.select(ChannelAccount).where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.id == account_id)
    ).scalar_one_or_none()


def add_rule(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    channel_account_id: uuid.UUID,
    action: str,
    product: str | None,
    actor: audit.Actor,
) -> RoutingRule:
    if action not in RULE_ACTIONS:
        raise InvalidInput(gettext("Choose force or exclude."), "action")
    merchant = db.session.execute(
        sa.select(Merchant).where(Merchant.tenant_id == tenant_id, Merchant.id == merchant_id)
    ).scalar_one_or_none()
    if merchant is None:
        raise InvalidInput(gettext("Choose a merchant."), "merchant_id")
    account = get_channel_account(tenant_id, channel_account_id)
    if account is None:
        raise InvalidInput(gettext("Choose a channel account."), "channel_account_id")
    if product and product not in account.products:
        raise InvalidInput(
            gettext("%(name)s does not serve %(product)s.", name=account.name, product=product), "product"
        )
    if action == "force":
        clash = db.session.execute(
            sa.select(RoutingRule.id).where(
                RoutingRule.tenant_id == tenant_id,
                RoutingRule.merchant_id == merchant_id,
                RoutingRule.action == "force",
                RoutingRule.product.is_(None)
                if not product
                else sa.or_(RoutingRule.product == product, RoutingRule.product.is_(None)),
            )
        ).first()
        if clash:
            raise InvalidInput(
                gettext("This merchant already has a forced channel for that product; remove it first."), "action"
            )
    rule = RoutingRule(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        merchant_id=merchant_id,
        channel_account_id=channel_account_id,
        action=action,
        product=product or None,
    )
    db.session.add(rule)
    audit.record(
        tenant_id,
        actor,
        f"routing_rule.{action}",
        "routing_rule",
        rule.id,
        audit.created(merchant=merchant.name, channel_account=account.name, product=product or "any"),
    )
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise InvalidInput(
            gettext("There is already a rule for this merchant, channel and product."), "action"
        ) from exc
    return rule


def remove_rule(rule: RoutingRule, actor: audit.Actor) -> None:
    audit.record(
        rule.tenant_id,
        actor,
        "routing_rule.removed",
        "routing_rule",
        rule.id,
        {"action": {"before": rule.action, "after": None}},
    )
    db.session.delete(rule)
    db.session.commit()
