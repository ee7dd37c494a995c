"""Screening a payment against its tenant's risk rules, at each confirmation, before any channel call.

`screen(pi)` runs inside the confirmation's first transaction (`payments.intents._confirm`, through
the hook `payments.intents.screen` which importing this module installs). It costs one statement
(the merchant's risk level with the tenant's enabled rules of the payment's currency), plus one for
the rules that look back over payments (velocity, structuring, duplicate: one aggregate over the
payer's, the card's and the merchant's recent payments, each part on its own index), plus one per
refund-share rule (the merchant's charges and refunds in the window). A fired rule writes an alert
(`RiskAlert`) in the same transaction; the alerts are e-mailed after the commit.

What is counted: the same tenant's payments in the same mode and currency that were confirmed
(processing, requires_capture, succeeded), created within the rule's window, without the payment
being screened, which is then added. The payer is the e-mail the merchant sent (`receipt_email`,
else the billing e-mail), in lower case; the card is the payment method as the merchant passed it
(no card number or channel fingerprint reaches the platform before the channel call; a saved card's
id is stable, Stripe's test tokens such as `pm_card_visa` are one "card" for every payer).

The outcome is the strongest action of the rules that fired: `block` refuses the payment as a
card decline (nothing is charged, no attempt is written); `hold` lets it be charged but marks it
held (`risk_review`), and settlement leaves its money pending until the review releases it;
`flag` only alerts.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from core import queue
from core.db import db
from core.i18n import gettext
from core.money import format_amount
from payments import intents
from payments.models import PaymentIntent
from risk.models import RiskAlert

log = logging.getLogger(__name__)
ALERT_JOB = "portal.alerts.risk_alerts"  # e-mails the tenant's admins (in its brand)
DECLINE_CODE = "fraudulent"  # Stripe's decline code when its own risk rules block a payment
BLOCK_MESSAGE = "Your card was declined: the payment was blocked by a risk rule. Nothing was charged."
# Amount thresholds by the merchant's risk level (from the KYC review) as a fraction: low risk
# doubles them, high risk halves them (rounded down); medium and not yet reviewed leave them.
LEVEL_FACTORS: dict[str | None, tuple[int, int]] = {"low": (2, 1), "medium": (1, 1), "high": (1, 2), None: (1, 1)}
STRENGTH = {"flag": 1, "hold": 2, "block": 3}
COUNTED_STATUSES = ("processing", "requires_capture", "succeeded")
# A refund-share rule that only flags alerts once a day per merchant (it would fire on every payment).
REFUND_SHARE_REPEAT = timedelta(days=1)
_PENDING_ALERTS = "risk_pending_alerts"


def _now() -> datetime:
    return datetime.now(UTC)


def scaled(amount: int, level: str | None) -> int:
    """An amount threshold as it applies to a merchant of `level`."""
    numerator, denominator = LEVEL_FACTORS.get(level, (1, 1))
    return amount * numerator // denominator


def payer_of(details: dict[str, Any] | None) -> str | None:
    """The payer's e-mail as rules compare it: the receipt e-mail, else the billing e-mail, lower case."""
    details = details or {}
    email = details.get("receipt_email") or (details.get("billing_details") or {}).get("email")
    return email.strip().lower() if email else None


@dataclass(frozen=True)
class Rule:
    id: uuid.UUID
    name: str
    kind: str
    action: str
    subject: str | None
    window_minutes: int | None
    count_limit: int | None
    amount_limit: int | None
    percent: int | None


@dataclass(frozen=True)
class Hit:
    rule: Rule
    reason: str


_RULES = sa.text(
    """
    SELECT m.risk_level, r.id, r.name, r.kind, r.action, r.subject, r.window_minutes, r.count_limit,
           r.amount_limit, r.percent
    FROM merchants AS m
    LEFT JOIN risk_rules AS r ON r.tenant_id = m.tenant_id AND r.enabled AND r.currency = :currency
    WHERE m.tenant_id = :tenant_id AND m.id = :merchant_id
    ORDER BY r.created_at, r.id
    """
).bindparams(sa.bindparam("tenant_id", type_=sa.Uuid), sa.bindparam("merchant_id", type_=sa.Uuid))

_SUBJECT_SQL = {
    "payer": "risk_payer = :payer",
    "card": "payment_method = :card",
    "merchant": "merchant_id = :merchant_id",
}

_REFUND_SHARE = sa.text(
    """
    SELECT COALESCE(sum(amount) FILTER (WHERE type = 'charge'), 0),
           COALESCE(-sum(amount) FILTER (WHERE type = 'refund'), 0),
           (SELECT max(created_at) FROM risk_alerts
            WHERE tenant_id = :tenant_id AND rule_id = :rule_id AND merchant_id = :merchant_id)
    FROM balance_transactions
    WHERE tenant_id = :tenant_id AND merchant_id = :merchant_id AND created_at >= :since
      AND livemode = :livemode AND currency = :currency AND type IN ('charge', 'refund')
    """
).bindparams(
    sa.bindparam("tenant_id", type_=sa.Uuid),
    sa.bindparam("merchant_id", type_=sa.Uuid),
    sa.bindparam("rule_id", type_=sa.Uuid),
)


def screen(pi: PaymentIntent) -> dict[str, Any] | None:
    """Apply the tenant's rules to the (locked or new) intent being confirmed, in the caller's
    transaction: alerts are added, a hold marks the intent. Returns the payment error when a rule
    blocks it (the caller fails the intent and commits), else None."""
    now = _now()
    payer = payer_of(pi.payer_details)
    # On the session's connection: no ORM hooks, and no autoflush (the intent's own row is written
    # once, by the caller's flush).
    rows = (
        db.session.connection()
        .execute(_RULES, {"tenant_id": pi.tenant_id, "merchant_id": pi.merchant_id, "currency": pi.currency})
        .all()
    )
    level = rows[0][0] if rows else None
    rules = [Rule(*row[1:]) for row in rows if row[1] is not None]
    hits = _evaluate(pi, rules, level, payer, now) if rules else []
    pi.risk_payer = payer
    strongest = max(hits, key=lambda hit: STRENGTH[hit.rule.action]).rule.action if hits else None
    if strongest == "hold":
        pi.risk_review, pi.risk_released_at = "held", None
    elif pi.risk_review == "held":
        # Held at an earlier confirmation that charged nothing (it is being confirmed again): this one decides.
        pi.risk_review = None
    if not hits:
        return None
    db.session.flush()  # the intent's row first: the alerts refer to it
    alerts = [
        RiskAlert(
            tenant_id=pi.tenant_id,
            id=uuid.uuid4(),
            rule_id=hit.rule.id,
            rule_name=hit.rule.name,
            kind=hit.rule.kind,
            action=hit.rule.action,
            merchant_id=pi.merchant_id,
            payment_intent_id=pi.id,
            livemode=pi.livemode,
            amount=pi.amount,
            currency=pi.currency,
            reason=hit.reason[:1000],
            created_at=now,
        )
        for hit in hits
    ]
    db.session.add_all(alerts)
    db.session.info.setdefault(_PENDING_ALERTS, {}).setdefault(pi.tenant_id, []).extend(str(a.id) for a in alerts)
    if strongest == "block":
        return {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": DECLINE_CODE,
            "message": BLOCK_MESSAGE,
        }
    return None


def _evaluate(pi: PaymentIntent, rules: list[Rule], level: str | None, payer: str | None, now: datetime) -> list[Hit]:
    hits: list[Hit] = []
    looking_back = []
    for rule in rules:
        if rule.kind == "large_amount":
            threshold = scaled(rule.amount_limit, level)
            if pi.amount >= threshold:
                hits.append(Hit(rule, _large_reason(pi, threshold, level)))
        elif rule.kind == "refund_share":
            hit = _refund_share(pi, rule, now)
            if hit is not None:
                hits.append(hit)
        elif (rule.subject == "payer" and payer is None) or (rule.subject == "card" and not pi.payment_method):
            continue  # the payment does not say who pays: a per-payer rule cannot apply
        elif rule.kind == "structuring":
            high = scaled(rule.amount_limit, level)
            low = high - high * rule.percent // 100
            if low <= pi.amount < high:  # only a payment just under the threshold counts
                looking_back.append((rule, {"low": low, "high": high}))
        else:
            looking_back.append((rule, {}))
    if looking_back:
        hits.extend(_looking_back(pi, looking_back, level, payer, now))
    return hits


def _looking_back(
    pi: PaymentIntent, rules: list[tuple[Rule, dict]], level: str | None, payer: str | None, now: datetime
) -> list[Hit]:
    """One aggregate over the recent payments of the subjects the rules name."""
    params: dict[str, Any] = {
        "tenant_id": pi.tenant_id,
        "merchant_id": pi.merchant_id,
        "livemode": pi.livemode,
        "currency": pi.currency,
        "id": pi.id,
        "payer": payer,
        "card": pi.payment_method,
        "amount": pi.amount,
        "since": now - timedelta(minutes=max(rule.window_minutes for rule, _ in rules)),
    }
    columns = []
    for number, (rule, band) in enumerate(rules):
        params[f"since_{number}"] = now - timedelta(minutes=rule.window_minutes)
        condition = [f"created_at >= :since_{number}", _SUBJECT_SQL[rule.subject]]
        if rule.kind == "duplicate":
            condition += ["merchant_id = :merchant_id", "amount = :amount"]
        if band:
            params[f"low_{number}"], params[f"high_{number}"] = band["low"], band["high"]
            condition.append(f"amount >= :low_{number} AND amount < :high_{number}")
        where = " AND ".join(condition)
        columns.append(f"count(*) FILTER (WHERE {where}), COALESCE(sum(amount) FILTER (WHERE {where}), 0)")
    subjects = " OR ".join(sorted({_SUBJECT_SQL[rule.subject] for rule, _ in rules}))
    statement = sa.text(
        f"""
        SELECT {", ".join(columns)}
        FROM payment_intents
        WHERE tenant_id = :tenant_id AND livemode = :livemode AND currency = :currency AND id <> :id
          AND status IN {COUNTED_STATUSES} AND created_at >= :since AND ({subjects})
        """
    )
    row = db.session.connection().execute(statement, params).one()
    hits = []
    for number, (rule, band) in enumerate(rules):
        count, total = row[2 * number] + 1, int(row[2 * number + 1]) + pi.amount
        reason = None
        if rule.kind == "velocity":
            reason = _velocity_reason(pi, rule, level, payer, count, total)
        elif rule.kind == "structuring" and count >= rule.count_limit:
            reason = gettext(
                "%(count)s payments by %(who)s within %(window)s min, each just under %(threshold)s "
                "(from %(low)s, %(percent)s%% below it); the rule fires at %(limit)s.",
                count=count,
                who=_who(rule.subject, payer, pi),
                window=rule.window_minutes,
                threshold=format_amount(band["high"], pi.currency),
                low=format_amount(band["low"], pi.currency),
                percent=rule.percent,
                limit=rule.count_limit,
            ) + _level_note(level)
        elif rule.kind == "duplicate" and count > 1:
            reason = gettext(
                "%(count)s payments of %(amount)s by %(who)s to the same merchant within %(window)s min.",
                count=count,
                amount=format_amount(pi.amount, pi.currency),
                who=_who(rule.subject, payer, pi),
                window=rule.window_minutes,
            )
        if reason:
            hits.append(Hit(rule, reason))
    return hits


def _velocity_reason(pi, rule: Rule, level, payer, count: int, total: int) -> str | None:
    parts = []
    if rule.count_limit is not None and count > rule.count_limit:
        parts.append(gettext("%(count)s payments (more than %(limit)s)", count=count, limit=rule.count_limit))
    if rule.amount_limit is not None:
        limit = scaled(rule.amount_limit, level)
        if total > limit:
            parts.append(
                gettext(
                    "%(total)s in all (more than %(limit)s)",
                    total=format_amount(total, pi.currency),
                    limit=format_amount(limit, pi.currency),
                )
                + _level_note(level)
            )
    if not parts:
        return None
    return gettext(
        "%(who)s: %(figures)s within %(window)s min.",
        who=_who(rule.subject, payer, pi),
        figures="; ".join(parts),
        window=rule.window_minutes,
    )


def _large_reason(pi, threshold: int, level) -> str:
    return gettext(
        "A single payment of %(amount)s, at or above %(threshold)s.",
        amount=format_amount(pi.amount, pi.currency),
        threshold=format_amount(threshold, pi.currency),
    ) + _level_note(level)


def _refund_share(pi: PaymentIntent, rule: Rule, now: datetime) -> Hit | None:
    charges, refunded, last_alert = (
        db.session.connection()
        .execute(
            _REFUND_SHARE,
            {
                "tenant_id": pi.tenant_id,
                "merchant_id": pi.merchant_id,
                "rule_id": rule.id,
                "livemode": pi.livemode,
                "currency": pi.currency,
                "since": now - timedelta(minutes=rule.window_minutes),
            },
        )
        .one()
    )
    charges, refunded = int(charges), int(refunded)
    if refunded == 0 or refunded * 100 <= charges * rule.percent:
        return None
    if rule.action == "flag" and last_alert is not None and now - last_alert < REFUND_SHARE_REPEAT:
        return None
    share = f"{refunded * 100 / charges:.1f}" if charges else "100+"
    return Hit(
        rule,
        gettext(
            "The merchant refunded %(refunded)s of %(charges)s taken within %(window)s min "
            "(%(share)s%%, more than %(percent)s%%).",
            refunded=format_amount(refunded, pi.currency),
            charges=format_amount(charges, pi.currency),
            window=rule.window_minutes,
            share=share,
            percent=rule.percent,
        ),
    )


def _who(subject: str | None, payer: str | None, pi: PaymentIntent) -> str:
    if subject == "payer":
        return gettext("payer %(email)s", email=payer)
    if subject == "card":
        return gettext("card %(payment_method)s", payment_method=pi.payment_method)
    return gettext("the merchant")


def _level_note(level: str | None) -> str:
    if level in ("low", "high"):
        return " " + gettext(
            "(Threshold adjusted for the merchant's %(level)s risk level.)",
            level=gettext("low") if level == "low" else gettext("high"),
        )
    return ""


# --- e-mail after commit -----------------------------------------------------------------


@orm_event.listens_for(Session, "after_commit")
def _mail_after_commit(session: Session) -> None:
    for tenant_id, alert_ids in session.info.pop(_PENDING_ALERTS, {}).items():
        queue_mail(tenant_id, alert_ids)


@orm_event.listens_for(Session, "after_rollback")
def _forget_alerts(session: Session) -> None:
    session.info.pop(_PENDING_ALERTS, None)


def queue_mail(tenant_id: uuid.UUID, alert_ids: list[str]) -> None:
    """Queue the alert e-mail to the tenant's admins; best effort (the alerts are in the console)."""
    try:
        queue.enqueue("mail", ALERT_JOB, str(tenant_id), list(alert_ids))
    except Exception:  # noqa: BLE001  (Redis away: the alerts stay listed in the console)
        log.warning("could not queue the risk alert e-mail of %s", tenant_id, exc_info=True)


intents.screen = screen
