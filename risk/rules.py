"""A tenant's risk rules as data: create, change, delete (audited), and what each kind uses.

Kinds and their figures (amounts in minor units of the rule's currency, windows in minutes):

- velocity: more than `count_limit` payments, and/or more than `amount_limit` in all, by one
  subject (payer, card or merchant) within the window, the payment being screened included;
- large_amount: a single payment of `amount_limit` or more;
- structuring: `count_limit` or more payments by one subject within the window, each just under
  `amount_limit`: at most `percent` % below it;
- duplicate: a payment of the same amount by the same payer (or card) to the same merchant
  within the window;
- refund_share: the merchant's refunds within the window above `percent` % of what it took then.

The merchant's risk level scales every amount threshold (`risk.screening.LEVEL_FACTORS`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from core.db import db
from core.i18n import gettext
from core.money import MoneyError, normalise_currency
from risk.models import ACTIONS, KINDS, SUBJECTS, RiskRule
from tenants import audit
from tenants.audit import Actor
from tenants.errors import InvalidInput

MAX_WINDOW_MINUTES = 31 * 24 * 60
MAX_COUNT = 100_000
MAX_AMOUNT = 99_999_999_999
NAME_MAX = 100
# The optional figures each kind uses; the others are cleared.
FIELDS: dict[str, tuple[str, ...]] = {
    "velocity": ("subject", "window_minutes", "count_limit", "amount_limit"),
    "large_amount": ("amount_limit",),
    "structuring": ("subject", "window_minutes", "count_limit", "amount_limit", "percent"),
    "duplicate": ("subject", "window_minutes"),
    "refund_share": ("window_minutes", "percent"),
}
FIGURES = ("subject", "window_minutes", "count_limit", "amount_limit", "percent")


@dataclass(frozen=True)
class RuleInput:
    name: str
    kind: str
    action: str
    currency: str
    enabled: bool = True
    subject: str | None = None
    window_minutes: Any = None
    count_limit: Any = None
    amount_limit: Any = None  # minor units
    percent: Any = None


def _whole(value: Any, field: str, low: int, high: int, message: str) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput(message, field) from None
    if not low <= number <= high:
        raise InvalidInput(message, field)
    return number


def clean(spec: RuleInput) -> dict[str, Any]:
    """The rule's columns from `spec`, or InvalidInput naming the field."""
    name = (spec.name or "").strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidInput(gettext("Give the rule a name of at most %(max)s characters.", max=NAME_MAX), "name")
    if spec.kind not in KINDS:
        raise InvalidInput(gettext("Choose what the rule looks at."), "kind")
    if spec.action not in ACTIONS:
        raise InvalidInput(gettext("Choose what the rule does: flag, hold or block."), "action")
    try:
        currency = normalise_currency(spec.currency or "")
    except MoneyError as exc:
        raise InvalidInput(str(exc), "currency") from None
    values: dict[str, Any] = {
        "name": name,
        "kind": spec.kind,
        "action": spec.action,
        "currency": currency,
        "enabled": bool(spec.enabled),
        "subject": spec.subject or None,
        "window_minutes": _whole(
            spec.window_minutes,
            "window_minutes",
            1,
            MAX_WINDOW_MINUTES,
            gettext("The window is a whole number of minutes from 1 to %(max)s (31 days).", max=MAX_WINDOW_MINUTES),
        ),
        "count_limit": _whole(
            spec.count_limit,
            "count_limit",
            1,
            MAX_COUNT,
            gettext("The number of payments is a whole number from 1 to %(max)s.", max=MAX_COUNT),
        ),
        "amount_limit": _whole(
            spec.amount_limit,
            "amount_limit",
            1,
            MAX_AMOUNT,
            gettext("The amount must be more than zero."),
        ),
        "percent": _whole(spec.percent, "percent", 1, 100, gettext("The percentage is a whole number from 1 to 100.")),
    }
    used = FIELDS[spec.kind]
    for figure in FIGURES:
        if figure not in used:
            values[figure] = None
    subjects = ("payer", "card") if spec.kind == "duplicate" else SUBJECTS
    if "subject" in used and values["subject"] not in subjects:
        raise InvalidInput(
            gettext("Choose whose payments the rule counts: %(choices)s.", choices=", ".join(subjects)), "subject"
        )
    if "window_minutes" in used and values["window_minutes"] is None:
        raise InvalidInput(gettext("Give the window in minutes."), "window_minutes")
    if spec.kind == "velocity" and values["count_limit"] is None and values["amount_limit"] is None:
        raise InvalidInput(gettext("Give a number of payments, an amount, or both."), "count_limit")
    if spec.kind in ("large_amount", "structuring") and values["amount_limit"] is None:
        raise InvalidInput(gettext("Give the threshold amount."), "amount_limit")
    if spec.kind == "structuring":
        if values["count_limit"] is None or values["count_limit"] < 2:
            raise InvalidInput(gettext("Structuring needs a number of payments of at least 2."), "count_limit")
        if values["percent"] is None or values["percent"] > 50:
            raise InvalidInput(
                gettext("Say how far below the threshold counts as just under it: 1 to 50 %."), "percent"
            )
    if spec.kind == "refund_share" and values["percent"] is None:
        raise InvalidInput(gettext("Give the share of refunds in percent."), "percent")
    return values


def _audited(rule: RiskRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in ("name", "kind", "action", "currency", "enabled", *FIGURES)}


def rules_of(tenant_id: uuid.UUID) -> list[RiskRule]:
    return list(
        db.session.execute(
            sa.select(RiskRule)
            .where(RiskRule.tenant_id == tenant_id)
            .order_by(RiskRule.currency, RiskRule.kind, RiskRule.created_at, RiskRule.id)
        ).scalars()
    )


def get(tenant_id: uuid.UUID, rule_id: uuid.UUID, *, lock: bool = False) -> RiskRule | None:
    statement = sa.select(RiskRule).where(RiskRule.tenant_id == tenant_id, RiskRule.id == rule_id)
    return db.session.execute(statement.with_for_update() if lock else statement).scalar_one_or_none()


def create(tenant_id: uuid.UUID, spec: RuleInput, actor: Actor) -> RiskRule:
    values = clean(spec)
    rule = RiskRule(tenant_id=tenant_id, id=uuid.uuid4(), **values)
    db.session.add(rule)
    db.session.flush()
    audit.record(tenant_id, actor, "risk.rule_created", "risk_rule", rule.id, audit.created(**_audited(rule)))
    db.session.commit()
    return rule


def update(tenant_id: uuid.UUID, rule_id: uuid.UUID, spec: RuleInput, actor: Actor) -> RiskRule:
    values = clean(spec)
    rule = get(tenant_id, rule_id, lock=True)
    if rule is None:
        db.session.rollback()
        raise LookupError(rule_id)
    before = _audited(rule)
    for name, value in values.items():
        setattr(rule, name, value)
    after = _audited(rule)
    if before != after:
        audit.record(tenant_id, actor, "risk.rule_updated", "risk_rule", rule.id, audit.changes(before, after))
    db.session.commit()
    return rule


def delete(tenant_id: uuid.UUID, rule_id: uuid.UUID, actor: Actor) -> None:
    """Delete a rule; its alerts stay (they carry its name and kind)."""
    rule = get(tenant_id, rule_id, lock=True)
    if rule is None:
        db.session.rollback()
        raise LookupError(rule_id)
    audit.record(
        tenant_id,
        actor,
        "risk.rule_deleted",
        "risk_rule",
        rule.id,
        {name: {"before": value} for name, value in _audited(rule).items()},
    )
    db.session.delete(rule)
    db.session.commit()


def spec_of(rule: RiskRule) -> RuleInput:
    return RuleInput(**{f.name: getattr(rule, f.name) for f in fields(RuleInput)})
