"""Merchant API tests: the app on a real port, driven by Stripe's official Python SDK and raw HTTP.

- `api_server` (session): the session's `app` on 127.0.0.1:<free port> in a thread, shut down at
  the end. Python cannot resolve `*.localhost`, so the tenant is reached on a custom domain that
  resolves: `127.0.0.1` is the test tenant's domain, and the base URL is http://127.0.0.1:<port>.
- `shop`: that tenant ("acme"), a sandbox channel account (USD cards), a merchant with a test
  secret key; `other_shop` makes a second merchant of the same tenant with its own key,
  `new_shop(slug)` a merchant of another tenant, `issue_key(shop, mode)` another key.
- `stripe_client`: a `stripe.StripeClient` for the shop's key against the server, no retries
  (a test that wants the SDK's retries builds its own with `sdk(...)`); `http`: an httpx client
  on the server with the shop's key. Every client is closed after its test.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import logscan
import pytest
import requests
import stripe
from werkzeug.serving import make_server

from core.db import db
from payments.channel_accounts import ChannelAccountInput, create_channel_account
from payments.intents import MerchantContext
from tenants import api_keys
from tenants.audit import Actor
from tenants.isolation import tenant_context

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Shop:
    tenant_id: uuid.UUID
    host: str  # for the Flask test client
    merchant: uuid.UUID
    channel: uuid.UUID
    secret: str  # the merchant's test secret key

    @property
    def ctx(self) -> MerchantContext:
        return MerchantContext(self.tenant_id, self.merchant, livemode=False)


@pytest.fixture(scope="session")
def api_server(app) -> Iterator[str]:
    server = make_server(HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-server", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _add_sandbox(app, tenant_id: uuid.UUID, name: str = "Sandbox") -> uuid.UUID:
    with app.app_context(), tenant_context(db.session, tenant_id):
        account = create_channel_account(
            tenant_id,
            ChannelAccountInput(
                name=name,
                type="sandbox",
                currency="USD",
                products=["card"],
                costs={"card": {"percent": "2.9", "fixed": 30}},
            ),
            {"card"},
            Actor.system(),
        )
        account_id = account.id
        db.session.remove()
    return account_id


def _new_key(app, tenant_id: uuid.UUID, merchant_id: uuid.UUID, mode: str = "test") -> str:
    with app.app_context():
        _, secret = api_keys.create_key(tenant_id, merchant_id, mode, f"{mode} backend", Actor.system())
        db.session.remove()
    logscan.remember("API secret key", secret)
    return secret


@pytest.fixture
def acme(make):
    """The test tenant, reachable as http://127.0.0.1:<port>."""
    return make.tenant("acme", domains=[HOST])


@pytest.fixture
def shop(app, make, acme) -> Shop:
    merchant = make.merchant(acme, "Coffee", "owner@coffee.example.com")
    channel = _add_sandbox(app, acme.id)
    return Shop(acme.id, acme.host, merchant, channel, _new_key(app, acme.id, merchant))


@pytest.fixture
def other_shop(app, make, acme, shop) -> Shop:
    """A second merchant of the same tenant, with its own key."""
    merchant = make.merchant(acme, "Tea", "owner@tea.example.com")
    return Shop(acme.id, acme.host, merchant, shop.channel, _new_key(app, acme.id, merchant))


@pytest.fixture
def new_shop(app, make):
    """`new_shop(slug)` -> a Shop of a new tenant (reached as <slug>.localhost with the test client)."""

    def build(slug: str, merchant_name: str = "Shop") -> Shop:
        tenant = make.tenant(slug)
        merchant = make.merchant(tenant, merchant_name, f"owner@{slug}-shop.example.com")
        channel = _add_sandbox(app, tenant.id)
        return Shop(tenant.id, tenant.host, merchant, channel, _new_key(app, tenant.id, merchant))

    return build


@pytest.fixture
def issue_key(app):
    """`issue_key(shop, mode)` -> a new secret key of the shop's merchant."""

    def issue(shop: Shop, mode: str = "test") -> str:
        return _new_key(app, shop.tenant_id, shop.merchant, mode)

    return issue


@pytest.fixture
def sdk(api_server) -> Iterator:
    """`sdk(secret, retries=0)` -> a StripeClient against the server; all are closed afterwards."""
    sessions: list[requests.Session] = []

    def build(secret: str, retries: int = 0) -> stripe.StripeClient:
        session = requests.Session()
        sessions.append(session)
        return stripe.StripeClient(
            secret,
            base_addresses={"api": api_server},
            max_network_retries=retries,
            http_client=stripe.RequestsClient(session=session),
        )

    yield build
    for session in sessions:
        session.close()


@pytest.fixture
def stripe_client(sdk, shop) -> stripe.StripeClient:
    return sdk(shop.secret)


@pytest.fixture
def http(api_server, shop) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server, headers={"Authorization": f"Bearer {shop.secret}"}, timeout=30) as client:
        yield client
