"""PaymentIntents and refunds through the sandbox channel, at the use-case level."""

import threading

import pytest
import sqlalchemy as sa

import ledger
from core.db import db
from payments import intents, refunds
from payments.errors import CardError, InvalidRequest
from payments.models import Event, PaymentAttempt
from tenants.isolation import platform_scope, tenant_context


@pytest.fixture
def shop(make):
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    make.channel_account(tenant.id, costs={"card": {"percent": "2.9", "fixed": 30}})
    return intents.MerchantContext(tenant.id, merchant, livemode=False)


@pytest.fixture
def as_shop(app, shop):
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        yield shop
        db.session.remove()


def _ledger_ok():
    with platform_scope(db.session):
        return ledger.check(db.session)


def test_create_and_confirm_succeeds_and_posts_to_the_ledger(as_shop):
    pi = intents.create(as_shop, amount=2000, currency="usd", payment_method="pm_card_visa", confirm=True)
    assert pi.status == "succeeded" and pi.amount_received == 2000
    assert pi.payment_method_types == ["card"] and pi.routing["chosen"]
    assert refunds.balance(as_shop)["pending"] == [{"amount": 2000, "currency": "usd"}]
    types = db.session.execute(sa.select(Event.type).order_by(Event.created_at)).scalars().all()
    assert types == ["payment_intent.created", "payment_intent.succeeded"]
    assert _ledger_ok() == []


def test_decline_leaves_the_intent_retryable(as_shop):
    with pytest.raises(CardError) as declined:
        intents.create(as_shop, amount=2000, currency="usd", payment_method="pm_card_chargeDeclined", confirm=True)
    assert declined.value.decline_code == "generic_decline"
    pi_id = declined.value.payment_intent["id"]
    pi = intents.get(as_shop, pi_id)
    assert pi.status == "requires_payment_method" and pi.last_payment_error["code"] == "card_declined"
    pi = intents.confirm_intent(as_shop, pi_id, payment_method="pm_card_visa")
    assert pi.status == "succeeded"


def test_manual_capture_then_partial_refunds(as_shop):
    pi = intents.create(
        as_shop, amount=5000, currency="usd", payment_method="pm_card_visa", capture_method="manual", confirm=True
    )
    assert pi.status == "requires_capture" and pi.amount_capturable == 5000
    pi = intents.capture(as_shop, pi.id, amount_to_capture=4000)
    assert pi.status == "succeeded" and pi.amount_received == 4000
    first = refunds.create(as_shop, payment_intent=pi.id, amount=1500)
    assert first.status == "succeeded"
    with pytest.raises(InvalidRequest, match="greater than unrefunded amount"):
        refunds.create(as_shop, payment_intent=pi.id, amount=3000)
    rest = refunds.create(as_shop, payment_intent=pi.id)
    assert rest.amount == 2500
    assert refunds.balance(as_shop)["pending"] == [{"amount": 0, "currency": "usd"}]
    assert _ledger_ok() == []


def test_timeout_stays_processing_and_is_resolved_by_query(as_shop, run_jobs):
    pi = intents.create(as_shop, amount=4001, currency="usd", payment_method="pm_card_visa", confirm=True)
    assert pi.status == "processing"
    db.session.remove()
    assert run_jobs() == 1
    with tenant_context(db.session, as_shop.tenant_id):
        pi = intents.get(as_shop, pi.id)
        assert pi.status == "succeeded"
        attempts = db.session.execute(sa.select(PaymentAttempt)).scalars().all()
        assert [a.status for a in attempts] == ["succeeded"]
    assert _ledger_ok() == []


def test_concurrent_refunds_never_exceed_what_was_received(app, shop):
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        pi = intents.create(shop, amount=10000, currency="usd", payment_method="pm_card_visa", confirm=True)
        db.session.remove()
    barrier = threading.Barrier(20)
    outcomes = []

    def refund():
        with app.app_context(), tenant_context(db.session, shop.tenant_id):
            barrier.wait(timeout=10)
            try:
                outcomes.append(refunds.create(shop, payment_intent=pi.id, amount=700).status)
            except InvalidRequest:
                outcomes.append("refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=refund) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes.count("succeeded") == 14 and outcomes.count("refused") == 6
    with app.app_context(), tenant_context(db.session, shop.tenant_id):
        assert intents.get(shop, pi.id).amount_refunded == 9800
        assert _ledger_ok() == []
        db.session.remove()


def test_an_attempt_the_channel_never_received_frees_the_payment(as_shop, run_jobs):
    from payments.channels.sandbox import STORE

    pi = intents.create(as_shop, amount=4001, currency="usd", payment_method="pm_card_visa", confirm=True)
    assert pi.status == "processing"
    # The channel lost the request: it has no charge under our idempotency key.
    attempt = db.session.execute(
        sa.select(PaymentAttempt).where(PaymentAttempt.payment_intent_id == pi.id)
    ).scalar_one()
    assert STORE.forget_charge(str(attempt.channel_account_id), attempt.idempotency_key)
    db.session.remove()
    assert run_jobs() == 1
    with tenant_context(db.session, as_shop.tenant_id):
        pi = intents.get(as_shop, pi.id)
        assert pi.status == "requires_payment_method"
        assert pi.last_payment_error["code"] == "channel_unavailable"
        # Nothing was charged, so the payment can simply be tried again (4001 would time out again).
        intents.update(as_shop, pi.id, amount=4000)
        assert intents.confirm_intent(as_shop, pi.id).status == "succeeded"
    assert _ledger_ok() == []


def test_a_lost_resolution_job_is_queued_again_by_the_sweep(as_shop, run_jobs, app, owner_engine):
    from payments import webhooks
    from portal import jobs

    pi = intents.create(as_shop, amount=4001, currency="usd", payment_method="pm_card_visa", confirm=True)
    assert pi.status == "processing"
    db.session.remove()
    # The job is lost (RQ's data emptied, a worker gone): nothing would ever ask the channel again. (The sandbox
    # channel keeps its charges in the same Redis: they stay, as a real channel's would.)
    connection = jobs.redis_connection()
    connection.delete(*connection.keys("rq:*"))
    assert run_jobs() == 0
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE payment_attempts SET created_at = now() - interval '5 minutes'"))
    assert webhooks.sweep()["attempts"] == 1
    assert webhooks.sweep()["attempts"] == 1  # the queued job is kept, not doubled
    assert run_jobs() == 1
    with tenant_context(db.session, as_shop.tenant_id):
        assert intents.get(as_shop, pi.id).status == "succeeded"
    assert webhooks.sweep()["attempts"] == 0
    assert _ledger_ok() == []


class _Died(BaseException):
    """The process dies (SIGKILL-like): nothing after this point of the request runs."""


@pytest.mark.parametrize("charged", [True, False], ids=["after-the-charge", "before-the-charge"])
def test_a_payment_whose_process_died_mid_confirmation_is_finished_by_the_sweep(
    as_shop, run_jobs, monkeypatch, owner_engine, charged
):
    from payments import webhooks
    from payments.channels.sandbox import SandboxAdapter

    real_charge = SandboxAdapter.charge

    def charge_then_die(self, request):
        if charged:
            real_charge(self, request)
        raise _Died

    monkeypatch.setattr(SandboxAdapter, "charge", charge_then_die)
    with pytest.raises(_Died):
        intents.create(as_shop, amount=2500, currency="usd", payment_method="pm_card_visa", confirm=True)
    monkeypatch.setattr(SandboxAdapter, "charge", real_charge)
    db.session.rollback()
    pi_id = db.session.execute(sa.select(PaymentAttempt.payment_intent_id)).scalar_one()
    assert intents.get(as_shop, pi_id).status == "processing"
    db.session.remove()
    # A live request is never raced: a young `started` attempt is left alone.
    assert webhooks.sweep()["attempts"] == 0
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE payment_attempts SET created_at = now() - interval '20 minutes'"))
    assert webhooks.sweep()["attempts"] == 1
    assert run_jobs() == 1
    with tenant_context(db.session, as_shop.tenant_id):
        pi = intents.get(as_shop, pi_id)
        if charged:  # the channel has the charge: the payment succeeds, posted once
            assert pi.status == "succeeded" and pi.amount_received == 2500
            assert refunds.balance(as_shop)["pending"] == [{"amount": 2500, "currency": "usd"}]
        else:  # nothing was charged: the payment can be tried again
            assert pi.status == "requires_payment_method"
            assert intents.confirm_intent(as_shop, pi_id).status == "succeeded"
    assert webhooks.sweep()["attempts"] == 0
    assert _ledger_ok() == []
