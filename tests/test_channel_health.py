"""A channel account that keeps failing leaves routing for a while; payments fail over meanwhile."""

import re
import socket

import pytest
import sqlalchemy as sa
from redis import Redis

from core import redis as shared_redis
from core.db import db
from payments import channel_health, intents
from payments.errors import CardError
from payments.models import PaymentAttempt
from tenants.isolation import tenant_context


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


@pytest.fixture
def shop(make):
    """A merchant whose cheapest channel is down (connection refused) and a dearer sandbox that works."""
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    dead_id = make.channel_account(
        tenant.id,
        "Dead stripe",
        type="stripe",
        costs={"card": {"percent": "1.0", "fixed": 0}},
        base_url=f"http://127.0.0.1:{_closed_port()}",
        credentials={"secret_key": "sk_test_DeadChannel0001"},
    )
    make.channel_account(tenant.id, "Sandbox", costs={"card": {"percent": "2.9", "fixed": 30}})
    return tenant, merchant, intents.MerchantContext(tenant.id, merchant, livemode=False), dead_id


def _pay(app, ctx, amount=2000, method="pm_card_visa"):
    with app.app_context(), tenant_context(db.session, ctx.tenant_id):
        pi = intents.create(ctx, amount=amount, currency="usd", payment_method=method, confirm=True)
        tried = (
            db.session.execute(
                sa.select(PaymentAttempt.status)
                .where(PaymentAttempt.payment_intent_id == pi.id)
                .order_by(PaymentAttempt.idempotency_key)
            )
            .scalars()
            .all()
        )
        db.session.remove()
        return pi, tried


def _verdict(pi, name):
    return next(v for v in pi.routing["verdicts"] if v["channel_name"] == name)


def test_a_failing_channel_is_dropped_after_the_threshold_and_probed_after_the_cool_down(app, shop):
    _, _, ctx, dead_id = shop
    for _ in range(channel_health.THRESHOLD):
        pi, tried = _pay(app, ctx)
        assert pi.status == "succeeded" and tried == ["unavailable", "succeeded"]  # failed over each time
    pi, tried = _pay(app, ctx)
    assert pi.status == "succeeded" and tried == ["succeeded"]  # the dead channel is not even tried
    verdict = _verdict(pi, "Dead stripe")
    assert verdict["reason"] == "unhealthy"
    assert f"{channel_health.THRESHOLD} failed calls in a row" in verdict["sentence"]

    # The cool-down is over: the next payment probes the channel, which fails and is dropped again at once.
    with app.app_context():
        shared_redis.connection().hset(f"{channel_health.PREFIX}{dead_id}", "open_until", 0)
    pi, tried = _pay(app, ctx)
    assert tried == ["unavailable", "succeeded"]
    pi, tried = _pay(app, ctx)
    assert tried == ["succeeded"] and _verdict(pi, "Dead stripe")["reason"] == "unhealthy"


def test_an_answer_from_the_channel_clears_its_failures(app, shop):
    _, _, ctx, dead_id = shop
    with app.app_context():
        for _ in range(channel_health.THRESHOLD - 1):
            channel_health.record_failure(dead_id, "connection refused")
        assert channel_health.states([dead_id])[dead_id].failures == channel_health.THRESHOLD - 1
        # The channel came back (now it declines a card: an answer, so it is up).
        channel_health.record_success(dead_id, channel_health.states([dead_id])[dead_id])
        assert channel_health.states([dead_id]) == {}
    pi, tried = _pay(app, ctx)
    assert _verdict(pi, "Dead stripe")["reason"] == "chosen"


def test_a_decline_is_an_answer_not_a_failure(app, make):
    tenant = make.tenant("acme")
    merchant = make.merchant(tenant, "Coffee", "owner@coffee.example.com")
    account_id = make.channel_account(tenant.id)
    ctx = intents.MerchantContext(tenant.id, merchant, livemode=False)
    for _ in range(channel_health.THRESHOLD + 1):
        with pytest.raises(CardError):
            _pay(app, ctx, method="pm_card_chargeDeclined")
    with app.app_context():
        assert channel_health.states([account_id]) == {}


def test_the_route_tester_names_the_unhealthy_channel(app, shop, site):
    tenant, merchant, _, dead_id = shop
    with app.app_context():
        for _ in range(channel_health.THRESHOLD):
            channel_health.record_failure(dead_id, "connection refused")
    client = site("acme.localhost")
    client.login(tenant.admin_email)
    page = client.submit(
        "/console/routing/test",
        {
            "test-merchant_id": str(merchant),
            "test-product": "card",
            "test-amount": "20.00",
            "test-currency": "USD",
            "test-mode": "test",
            "test-payer_elements": "payment_method",
        },
        form_page="/console/routing",
    )
    html = page.get_data(as_text=True)
    verdicts = dict(re.findall(r'<tr class="verdict verdict-[a-z_]+"><td>([^<]+)</td><td>([a-z]+)</td>', html))
    assert verdicts == {"Dead stripe": "dropped", "Sandbox": "chosen"}
    assert "the channel is failing" in html and "connection refused" in html


def test_without_redis_every_channel_counts_as_healthy(app, shop, monkeypatch):
    _, _, ctx, dead_id = shop
    with app.app_context():
        for _ in range(channel_health.THRESHOLD):
            channel_health.record_failure(dead_id, "connection refused")
    away = Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.5)
    monkeypatch.setattr(channel_health, "_redis", lambda: away)
    pi, tried = _pay(app, ctx)
    # Health unknown: the dead channel is tried (and failed over from); the payment still succeeds.
    assert pi.status == "succeeded" and tried == ["unavailable", "succeeded"]
