"""Risk and AML monitoring: each kind of rule fires at its threshold and not below it, block refuses
before any channel call, hold keeps the money out of settlement until released or refunded, the
merchant's risk level moves the thresholds, and another tenant's rules never apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import ledger
from clearing import settlement
from clearing.models import ClearingRun, Settlement
from core.db import db
from payments import intents, refunds
from payments.errors import CardError
from payments.models import BalanceTransaction, PaymentAttempt, PaymentIntent
from risk import review, rules
from risk.models import RiskAlert
from tenants.audit import Actor
from tenants.isolation import platform_scope, tenant_context
from tenants.models import AuditEvent, Merchant

ADMIN = Actor(kind="user", email="admin@acme.example.com")


@pytest.fixture
def acme(app, make):
    tenant = make.tenant("acme")
    coffee = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    tea = make.merchant(tenant, "Tea", "owner@tea.example.com")
    make.channel_account(tenant.id)
    with app.app_context():
        yield tenant, coffee, tea
        db.session.remove()


def _rule(tenant_id, kind, action="flag", **figures):
    with tenant_context(db.session, tenant_id):
        rule = rules.create(
            tenant_id,
            rules.RuleInput(name=f"{kind} {action}", kind=kind, action=action, currency="USD", **figures),
            ADMIN,
        )
        return rule.id


def _pay(tenant_id, merchant_id, amount, email="jenny@example.com", pm="pm_card_visa", capture="automatic"):
    """Create and confirm a payment; returns (intent id, the error when refused)."""
    ctx = intents.MerchantContext(tenant_id, merchant_id, livemode=False)
    details = {"receipt_email": email} if email else None
    with tenant_context(db.session, tenant_id):
        try:
            pi = intents.create(
                ctx,
                amount=amount,
                currency="usd",
                payment_method=pm,
                confirm=True,
                payer_details=details,
                capture_method=capture,
            )
        except CardError as exc:
            return exc.payment_intent["id"], exc
        return pi.id, None


def _alerts(tenant_id):
    with tenant_context(db.session, tenant_id):
        return db.session.execute(
            sa.select(RiskAlert.kind, RiskAlert.action, RiskAlert.payment_intent_id, RiskAlert.reason).order_by(
                RiskAlert.created_at
            )
        ).all()


def _intent(tenant_id, intent_id) -> PaymentIntent:
    with tenant_context(db.session, tenant_id):
        db.session.expire_all()
        return db.session.get(PaymentIntent, (tenant_id, intent_id))


def _set_level(tenant_id, merchant_id, level):
    with tenant_context(db.session, tenant_id):
        db.session.execute(
            sa.update(Merchant)
            .where(Merchant.tenant_id == tenant_id, Merchant.id == merchant_id)
            .values(risk_level=level)
        )
        db.session.commit()


# --- each kind at and around its threshold ---------------------------------------------------


def test_large_amount_fires_at_the_threshold_and_not_a_cent_below(acme):
    tenant, coffee, _ = acme
    _rule(tenant.id, "large_amount", amount_limit=100_000)
    below, _ = _pay(tenant.id, coffee, 99_999)
    at, _ = _pay(tenant.id, coffee, 100_000)
    above, _ = _pay(tenant.id, coffee, 100_001)
    fired = _alerts(tenant.id)
    assert [a.payment_intent_id for a in fired] == [at, above]
    assert below not in {a.payment_intent_id for a in fired}
    assert "1,000.00" in fired[0].reason  # the threshold, as people read it
    # Flag only alerts: every payment went through.
    assert {_intent(tenant.id, i).status for i in (below, at, above)} == {"succeeded"}


def test_velocity_counts_a_payers_payments_in_the_window(acme):
    tenant, coffee, tea = acme
    _rule(tenant.id, "velocity", subject="payer", window_minutes=60, count_limit=3)
    first = [_pay(tenant.id, coffee if n % 2 else tea, 1_000)[0] for n in range(3)]
    assert _alerts(tenant.id) == []  # three is the limit: allowed
    other, _ = _pay(tenant.id, coffee, 1_000, email="someone@example.com")
    assert _alerts(tenant.id) == []  # another payer counts apart
    fourth, _ = _pay(tenant.id, tea, 1_000, email="JENNY@example.com")  # the e-mail compared in lower case
    [alert] = _alerts(tenant.id)
    assert alert.payment_intent_id == fourth and alert.kind == "velocity"
    assert "4 payments (more than 3)" in alert.reason and "jenny@example.com" in alert.reason
    # Payments older than the window do not count.
    with tenant_context(db.session, tenant.id):
        db.session.execute(
            sa.update(PaymentIntent)
            .where(PaymentIntent.id.in_([*first, fourth]))
            .values(created_at=datetime.now(UTC) - timedelta(minutes=61))
        )
        db.session.commit()
    _pay(tenant.id, coffee, 1_000)
    assert len(_alerts(tenant.id)) == 1
    assert other


def test_velocity_by_amount_per_card_and_per_merchant(acme):
    tenant, coffee, tea = acme
    _rule(tenant.id, "velocity", subject="card", window_minutes=60, amount_limit=5_000)
    _rule(tenant.id, "velocity", action="hold", subject="merchant", window_minutes=60, count_limit=2)
    _pay(tenant.id, coffee, 2_000, pm="pm_card_mastercard", email=None)
    _pay(tenant.id, tea, 3_000, pm="pm_card_mastercard", email=None)  # 50.00 in all: the limit, allowed
    assert _alerts(tenant.id) == []
    over, _ = _pay(tenant.id, tea, 1, pm="pm_card_mastercard", email=None)  # 50.01
    [alert] = _alerts(tenant.id)
    assert alert.payment_intent_id == over and "50.01 USD in all (more than 50.00 USD)" in alert.reason
    # Tea's third payment in the hour: held.
    held, _ = _pay(tenant.id, tea, 100, pm="pm_card_visa", email=None)
    assert [(a.kind, a.action) for a in _alerts(tenant.id)][-1] == ("velocity", "hold")
    assert _intent(tenant.id, held).risk_review == "held"


def test_structuring_fires_on_the_nth_payment_just_under_the_threshold(acme):
    tenant, coffee, _ = acme
    # 3 payments within an hour, each within 10 % below 1,000.00 (900.00 to 999.99).
    _rule(
        tenant.id,
        "structuring",
        action="hold",
        subject="payer",
        window_minutes=60,
        count_limit=3,
        amount_limit=100_000,
        percent=10,
    )
    _pay(tenant.id, coffee, 89_999)  # below the band: does not count
    _pay(tenant.id, coffee, 100_000)  # at the threshold: not "under" it
    _pay(tenant.id, coffee, 90_000)
    _pay(tenant.id, coffee, 99_999)
    assert _alerts(tenant.id) == []
    third, _ = _pay(tenant.id, coffee, 95_000)
    [alert] = _alerts(tenant.id)
    assert (alert.kind, alert.action, alert.payment_intent_id) == ("structuring", "hold", third)
    assert "3 payments" in alert.reason and "900.00" in alert.reason
    assert _intent(tenant.id, third).risk_review == "held"


def test_duplicate_same_payer_amount_and_merchant(acme):
    tenant, coffee, tea = acme
    _rule(tenant.id, "duplicate", action="block", subject="payer", window_minutes=10)
    first, _ = _pay(tenant.id, coffee, 4_200)
    _pay(tenant.id, coffee, 4_201)  # another amount
    _pay(tenant.id, tea, 4_200)  # another merchant
    _pay(tenant.id, coffee, 4_200, email="other@example.com")  # another payer
    assert _alerts(tenant.id) == []
    again, error = _pay(tenant.id, coffee, 4_200)
    assert error is not None and error.decline_code == "fraudulent"
    [alert] = _alerts(tenant.id)
    assert alert.payment_intent_id == again and "2 payments of" in alert.reason
    assert first != again


def test_refund_share_applies_to_the_merchants_next_payments(acme):
    tenant, coffee, tea = acme
    _rule(tenant.id, "refund_share", subject=None, window_minutes=24 * 60, percent=20)
    paid, _ = _pay(tenant.id, coffee, 10_000)
    with tenant_context(db.session, tenant.id):
        refunds.create(intents.MerchantContext(tenant.id, coffee, False), payment_intent=paid, amount=2_000)
    _pay(tenant.id, coffee, 1)  # 20.00 of 100.01: just under 20 %
    assert _alerts(tenant.id) == []
    with tenant_context(db.session, tenant.id):
        refunds.create(intents.MerchantContext(tenant.id, coffee, False), payment_intent=paid, amount=1)
    flagged, _ = _pay(tenant.id, coffee, 500)  # 20.01 of 100.01
    _pay(tenant.id, tea, 500)  # Tea refunded nothing
    [alert] = _alerts(tenant.id)
    assert alert.payment_intent_id == flagged and "more than 20%" in alert.reason
    _pay(tenant.id, coffee, 500)  # a flag is not repeated the same day
    assert len(_alerts(tenant.id)) == 1


# --- block -----------------------------------------------------------------------------------


def test_block_refuses_without_a_channel_call_or_ledger_movement(acme):
    tenant, coffee, _ = acme
    _rule(tenant.id, "large_amount", action="block", amount_limit=50_000)
    intent_id, error = _pay(tenant.id, coffee, 50_000)
    assert error is not None
    assert (error.code, error.decline_code, error.http_status) == ("card_declined", "fraudulent", 402)
    pi = _intent(tenant.id, intent_id)
    assert pi.status == "requires_payment_method" and pi.amount_received == 0
    assert pi.last_payment_error["decline_code"] == "fraudulent"
    with tenant_context(db.session, tenant.id):
        attempts = db.session.scalar(
            sa.select(sa.func.count()).select_from(PaymentAttempt).where(PaymentAttempt.payment_intent_id == intent_id)
        )
        entries = db.session.scalar(sa.text("SELECT count(*) FROM journal_entries"))
        moved = db.session.scalar(sa.select(sa.func.count()).select_from(BalanceTransaction))
    assert (attempts, entries, moved) == (0, 0, 0)
    [alert] = _alerts(tenant.id)
    assert alert.action == "block" and alert.payment_intent_id == intent_id


def test_a_disabled_rule_or_another_currency_does_not_apply(acme):
    tenant, coffee, _ = acme
    rule_id = _rule(tenant.id, "large_amount", action="block", amount_limit=1_000)
    with tenant_context(db.session, tenant.id):
        rules.update(
            tenant.id,
            rule_id,
            rules.RuleInput(
                name="off", kind="large_amount", action="block", currency="USD", enabled=False, amount_limit=1_000
            ),
            ADMIN,
        )
        rules.create(
            tenant.id,
            rules.RuleInput(name="eur", kind="large_amount", action="block", currency="EUR", amount_limit=1),
            ADMIN,
        )
    _, error = _pay(tenant.id, coffee, 5_000)
    assert error is None and _alerts(tenant.id) == []


# --- hold, settlement, release, refund -------------------------------------------------------


def _settle(tenant_id, now):
    with tenant_context(db.session, tenant_id):
        run = ClearingRun(tenant_id=tenant_id, kind="settlement")
        db.session.add(run)
        db.session.commit()
        return settlement.settle(tenant_id, run, now)


def _backdate(tenant_id, intent_id, at):
    with tenant_context(db.session, tenant_id):
        db.session.execute(
            sa.update(BalanceTransaction).where(BalanceTransaction.source == intent_id).values(created_at=at)
        )
        db.session.commit()


def test_a_held_payment_is_charged_but_not_settled_until_released(acme):
    tenant, coffee, _ = acme
    _rule(tenant.id, "large_amount", action="hold", amount_limit=100_000)
    held, error = _pay(tenant.id, coffee, 150_000)
    normal, _ = _pay(tenant.id, coffee, 2_000)
    assert error is None
    pi = _intent(tenant.id, held)
    assert (pi.status, pi.amount_received, pi.risk_review) == ("succeeded", 150_000, "held")
    monday = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    for intent_id in (held, normal):
        _backdate(tenant.id, intent_id, monday)
    outcome = _settle(tenant.id, datetime(2026, 11, 4, tzinfo=UTC))
    assert outcome["transactions"] == 1  # only the normal payment
    with tenant_context(db.session, tenant.id):
        statuses = dict(db.session.execute(sa.select(BalanceTransaction.source, BalanceTransaction.status)).all())
        assert statuses == {held: "pending", normal: "available"}
        assert [p.id for p in db.session.execute(review.held(tenant.id)).scalars()] == [held]
        review.release(tenant.id, held, ADMIN)
        assert db.session.execute(review.held(tenant.id)).first() is None
        event = db.session.execute(
            sa.select(AuditEvent).where(AuditEvent.action == "payment.risk_released")
        ).scalar_one()
        assert event.object_id == held
    # Released today: it settles with today's business day, as a settlement of its own.
    outcome = _settle(tenant.id, datetime.now(UTC) + timedelta(days=2))
    assert outcome["transactions"] == 1
    with tenant_context(db.session, tenant.id):
        assert db.session.scalar(sa.select(BalanceTransaction.status).where(BalanceTransaction.source == held)) == (
            "available"
        )
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Settlement)) == 2
    with platform_scope(db.session):
        assert ledger.check(db.session) == []


def test_refunding_a_held_payment_from_the_review_refunds_it_in_full(acme):
    tenant, coffee, _ = acme
    _rule(tenant.id, "large_amount", action="hold", amount_limit=100_000)
    held, _ = _pay(tenant.id, coffee, 120_000)
    with tenant_context(db.session, tenant.id):
        refund = review.refund(tenant.id, held, ADMIN)
        assert (refund.amount, refund.status, refund.reason) == (120_000, "succeeded", "fraudulent")
        pi = db.session.get(PaymentIntent, (tenant.id, held))
        assert (pi.amount_refunded, pi.risk_review) == (120_000, "refunded")
        entry = db.session.execute(
            sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'refund.succeeded' AND reference = :r"),
            {"r": refund.id},
        ).scalar_one()
        assert entry == 1
        event = db.session.execute(
            sa.select(AuditEvent).where(AuditEvent.action == "payment.risk_refunded")
        ).scalar_one()
        assert event.changes["refund"] == {"after": refund.id}
        # Both the charge and its refund now settle.
        assert db.session.execute(review.held(tenant.id)).first() is None
    outcome = _settle(tenant.id, datetime.now(UTC) + timedelta(days=2))
    assert outcome["transactions"] == 2
    with platform_scope(db.session):
        assert ledger.check(db.session) == []


# --- the merchant's risk level ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "quiet", "fires"),
    [(None, 99_999, 100_000), ("medium", 99_999, 100_000), ("low", 199_999, 200_000), ("high", 49_999, 50_000)],
)
def test_the_merchants_risk_level_scales_amount_thresholds(acme, level, quiet, fires):
    tenant, coffee, _ = acme
    _set_level(tenant.id, coffee, level)
    _rule(tenant.id, "large_amount", amount_limit=100_000)
    _pay(tenant.id, coffee, quiet)
    assert _alerts(tenant.id) == []
    fired, _ = _pay(tenant.id, coffee, fires)
    [alert] = _alerts(tenant.id)
    assert alert.payment_intent_id == fired
    assert ("risk level" in alert.reason) == (level in ("low", "high"))


def test_scaled_thresholds():
    from risk.screening import scaled

    assert [scaled(1_001, level) for level in ("low", "medium", "high", None)] == [2_002, 1_001, 500, 1_001]


# --- rules as data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "velocity", "subject": "payer", "window_minutes": "60"}, "count_limit"),
        ({"kind": "velocity", "subject": "nobody", "window_minutes": "60", "count_limit": "3"}, "subject"),
        ({"kind": "velocity", "subject": "payer", "window_minutes": "0", "count_limit": "3"}, "window_minutes"),
        ({"kind": "large_amount", "amount_limit": "-5"}, "amount_limit"),
        ({"kind": "duplicate", "subject": "merchant", "window_minutes": "5"}, "subject"),
        (
            {
                "kind": "structuring",
                "subject": "payer",
                "window_minutes": "60",
                "count_limit": "3",
                "amount_limit": "1000",
                "percent": "60",
            },
            "percent",
        ),
        ({"kind": "refund_share", "window_minutes": "60", "percent": "101"}, "percent"),
        ({"kind": "large_amount", "amount_limit": "100", "currency": "XXQ"}, "currency"),
        ({"kind": "nonsense"}, "kind"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_field(acme, spec, field):
    from tenants.errors import InvalidInput

    tenant, _, _ = acme
    values = {"name": "r", "action": "flag", "currency": "USD", **spec}
    with tenant_context(db.session, tenant.id):
        with pytest.raises(InvalidInput) as refused:
            rules.create(tenant.id, rules.RuleInput(**values), ADMIN)
        assert refused.value.field == field
        db.session.rollback()
        assert rules.rules_of(tenant.id) == []


def test_rule_changes_are_audited(acme):
    tenant, _, _ = acme
    rule_id = _rule(tenant.id, "large_amount", amount_limit=100)
    with tenant_context(db.session, tenant.id):
        rules.update(
            tenant.id,
            rule_id,
            rules.RuleInput(
                name="large_amount flag", kind="large_amount", action="hold", currency="USD", amount_limit=200
            ),
            ADMIN,
        )
        rules.delete(tenant.id, rule_id, ADMIN)
        events = db.session.execute(
            sa.select(AuditEvent.action, AuditEvent.changes)
            .where(AuditEvent.object_type == "risk_rule")
            .order_by(AuditEvent.created_at)
        ).all()
    assert [e.action for e in events] == ["risk.rule_created", "risk.rule_updated", "risk.rule_deleted"]
    assert events[1].changes == {
        "action": {"before": "flag", "after": "hold"},
        "amount_limit": {"before": 100, "after": 200},
    }


# --- tenants ---------------------------------------------------------------------------------


def test_another_tenants_rules_do_not_apply(acme, make):
    tenant, coffee, _ = acme
    other = make.tenant("other")
    shop = make.merchant(other, "Shop", "owner@shop.example.com")
    make.channel_account(other.id)
    _rule(other.id, "large_amount", action="block", amount_limit=100)
    _, error = _pay(tenant.id, coffee, 5_000)
    assert error is None and _alerts(tenant.id) == []
    _, error = _pay(other.id, shop, 5_000)
    assert error is not None and len(_alerts(other.id)) == 1


def test_a_refund_of_a_held_payment_waits_with_it(acme):
    tenant, coffee, _ = acme
    _rule(tenant.id, "large_amount", action="hold", amount_limit=100_000)
    held, _ = _pay(tenant.id, coffee, 100_000)
    with tenant_context(db.session, tenant.id):
        refund = refunds.create(intents.MerchantContext(tenant.id, coffee, False), payment_intent=held, amount=30_000)
    later = datetime.now(UTC) + timedelta(days=3)
    assert _settle(tenant.id, later)["transactions"] == 0  # neither the charge nor its refund
    with tenant_context(db.session, tenant.id):
        review.release(tenant.id, held, ADMIN)
    outcome = _settle(tenant.id, later)
    assert outcome["transactions"] == 2 and outcome["net"][0]["amount"] == 70_000
    with tenant_context(db.session, tenant.id):
        assert db.session.scalar(
            sa.select(BalanceTransaction.status).where(BalanceTransaction.source == refund.id)
        ) == ("available")
