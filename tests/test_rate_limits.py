"""Rate limits (portal/limits.py) on the test's real Redis: sign-in, password reset requests,
sign-up and the merchant API. Each test lowers the limit it exercises (the suite's config puts
them out of reach); the real defaults are checked on a fresh app. "After the window" is the
limiter's counts cleared, not a wait."""

from __future__ import annotations

import pytest
from pages import body

from core.db import db
from portal import config as settings
from portal import create_app, limits
from tenants import api_keys
from tenants.audit import Actor

OWNER = "owner@corner.example.com"
WRONG = "not-the-password"


@pytest.fixture
def acme(make):
    return make.tenant("acme", name="Acme Payments")


@pytest.fixture
def lower(app, monkeypatch):
    """`lower(SIGN_IN_IP="3/minute")`: those limits for this test only."""

    def set_(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setitem(app.config["RATE_LIMITS"], name, value)

    return set_


def client_from(app, host: str, ip: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    client.base = f"http://{host}"
    return client


def post_login(client, email: str, password: str = WRONG):
    # CSRF is part of the form; the test client posts what a browser would, token included.
    page = client.get("/login", base_url=client.base)
    token = _csrf(page)
    return client.post("/login", base_url=client.base, data={"email": email, "password": password, "csrf_token": token})


def _csrf(response) -> str:
    import re

    match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', response.get_data(as_text=True))
    assert match
    return match.group(1)


def clear_counts(app) -> None:
    """The window has passed: every count starts again."""
    with app.app_context():
        limits.limiter().reset()


def assert_refused_page(response, brand: str = "Acme Payments", window: int = 60) -> int:
    assert response.status_code == 429
    html = body(response)
    assert "Too many attempts" in html
    assert brand in html  # the tenant's themed error page, not a bare text
    retry = int(response.headers["Retry-After"])
    assert 1 <= retry <= window
    return retry


# --- sign-in ------------------------------------------------------------------------------------


def test_sign_in_is_limited_per_client_address(app, acme, make, lower):
    make.merchant(acme, "Corner Cafe", OWNER)
    lower(SIGN_IN_IP="3/minute")
    attacker = client_from(app, acme.host, "203.0.113.7")
    for n in range(3):
        assert post_login(attacker, f"guess{n}@example.com").status_code == 401
    assert_refused_page(post_login(attacker, OWNER, "correct-horse-battery"))
    # The sign-in page itself still opens; only attempts count.
    assert attacker.get("/login", base_url=attacker.base).status_code == 200

    neighbour = client_from(app, acme.host, "198.51.100.2")
    assert post_login(neighbour, OWNER, "correct-horse-battery").status_code == 302

    clear_counts(app)
    assert post_login(attacker, OWNER, "correct-horse-battery").status_code == 302


def test_sign_in_is_limited_per_account_email_from_any_address(app, acme, make, lower):
    make.merchant(acme, "Corner Cafe", OWNER)
    other = make.tenant("other", name="Other Payments")
    make.merchant(other, "Other Cafe", OWNER)  # the same e-mail on another tenant is another account
    lower(SIGN_IN_EMAIL="2/minute")
    assert post_login(client_from(app, acme.host, "203.0.113.1"), OWNER).status_code == 401
    assert post_login(client_from(app, acme.host, "203.0.113.2"), OWNER.upper()).status_code == 401
    assert_refused_page(post_login(client_from(app, acme.host, "203.0.113.3"), f" {OWNER} ", "correct-horse-battery"))

    assert post_login(client_from(app, acme.host, "203.0.113.4"), "someone@else.example.com").status_code == 401
    assert post_login(client_from(app, other.host, "203.0.113.5"), OWNER, "correct-horse-battery").status_code == 302


def test_every_sign_in_step_counts_against_the_address(app, acme, lower):
    """Forms of the auth blueprint that prove who someone is (a reset or invitation link here, a
    one-time code step too) share the sign-in limit per address, without naming each one."""
    lower(SIGN_IN_IP="2/minute")
    client = client_from(app, acme.host, "203.0.113.9")
    assert post_login(client, "a@example.com").status_code == 401
    token = _csrf(client.get("/login", base_url=client.base))
    form = {"password": "x", "confirm": "x", "csrf_token": token}
    page = client.post("/password/reset/not-a-token", base_url=client.base, data=form)
    assert page.status_code == 400  # the link is refused as before
    assert_refused_page(post_login(client, "b@example.com"))
    assert client.post("/invitation/not-a-token", base_url=client.base, data=form).status_code == 429


# --- password reset and sign-up -------------------------------------------------------------------


def forgot(client, email: str):
    token = _csrf(client.get("/password/forgot", base_url=client.base))
    return client.post("/password/forgot", base_url=client.base, data={"email": email, "csrf_token": token})


def test_password_reset_requests_are_limited_per_address_and_per_email(app, acme, lower):
    lower(PASSWORD_RESET_IP="2/minute", PASSWORD_RESET_EMAIL="1/hour")
    client = client_from(app, acme.host, "203.0.113.20")
    assert forgot(client, "first@example.com").status_code == 302
    assert forgot(client, "second@example.com").status_code == 302
    assert_refused_page(forgot(client, "third@example.com"))

    elsewhere = client_from(app, acme.host, "203.0.113.21")
    # That e-mail address had its request this hour.
    assert_refused_page(forgot(elsewhere, "FIRST@example.com"), window=3600)
    assert forgot(elsewhere, "fourth@example.com").status_code == 302


def signup(client, email: str):
    token = _csrf(client.get("/signup", base_url=client.base))
    password = "a-long-passphrase-1"
    form = {"business_name": "Stall", "email": email, "password": password, "confirm": password}
    return client.post("/signup", base_url=client.base, data={**form, "csrf_token": token})


def test_sign_ups_are_limited_per_address(app, acme, lower):
    lower(SIGNUP_IP="2/minute")
    client = client_from(app, acme.host, "203.0.113.30")
    assert signup(client, "one@stall.example.com").status_code == 302
    assert signup(client, "two@stall.example.com").status_code == 302
    assert_refused_page(signup(client, "three@stall.example.com"))
    assert signup(client_from(app, acme.host, "203.0.113.31"), "four@stall.example.com").status_code == 302


# --- the merchant API ---------------------------------------------------------------------------


def new_key(app, tenant_id, merchant_id) -> str:
    with app.app_context():
        _, secret = api_keys.create_key(tenant_id, merchant_id, "test", "backend", Actor.system())
        db.session.remove()
    return secret


def api_get(app, host: str, secret: str | None, ip: str = "192.0.2.10", path: str = "/v1/payment_intents"):
    client = client_from(app, host, ip)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.get(path, base_url=client.base, headers=headers)


def assert_stripe_rate_limit(response) -> None:
    assert response.status_code == 429
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "rate_limit"
    assert error["message"].startswith("Too many requests hit the API too quickly.")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Request-Id"].startswith("req_")


def test_the_api_is_limited_per_key(app, acme, make, lower):
    coffee = make.merchant(acme, "Coffee", "owner@coffee.example.com")
    tea = make.merchant(acme, "Tea", "owner@tea.example.com")
    coffee_key, coffee_second_key, tea_key = (
        new_key(app, acme.id, coffee),
        new_key(app, acme.id, coffee),
        new_key(app, acme.id, tea),
    )
    lower(API_KEY="3/minute")
    for _ in range(3):
        assert api_get(app, acme.host, coffee_key).status_code == 200
    refused = api_get(app, acme.host, coffee_key, ip="192.0.2.99")  # another address: still the same key
    assert_stripe_rate_limit(refused)
    assert coffee_key not in refused.get_data(as_text=True)

    # Other keys, from the same address, are unaffected.
    assert api_get(app, acme.host, tea_key).status_code == 200
    assert api_get(app, acme.host, coffee_second_key).status_code == 200

    clear_counts(app)
    assert api_get(app, acme.host, coffee_key).status_code == 200


def test_api_requests_without_a_valid_key_are_limited_per_address(app, acme, make, lower):
    coffee = make.merchant(acme, "Coffee", "owner@coffee.example.com")
    key = new_key(app, acme.id, coffee)
    lower(API_IP="3/minute")
    assert api_get(app, acme.host, "sk_test_guess000000000000000001").status_code == 401
    assert api_get(app, acme.host, None).status_code == 401
    assert api_get(app, acme.host, None, path="/v1/openapi.json").status_code == 200
    assert_stripe_rate_limit(api_get(app, acme.host, "sk_test_guess000000000000000002"))

    # Another address is not affected, and valid keys do not use up the address's allowance.
    assert api_get(app, acme.host, "sk_test_guess000000000000000003", ip="192.0.2.77").status_code == 401
    for _ in range(5):
        assert api_get(app, acme.host, key, ip="192.0.2.78").status_code == 200

    clear_counts(app)
    assert api_get(app, acme.host, "sk_test_guess000000000000000004").status_code == 401


# --- defaults and a missing Redis ---------------------------------------------------------------


@pytest.fixture
def fresh_app(app):
    """`fresh_app(**overrides)`: another app on the same database and Redis, with the settings' own
    rate limits; its connections are closed after the test."""
    built = []

    def build(**overrides):
        config = {
            key: app.config[key]
            for key in (
                "TESTING",
                "DATABASE_URL",
                "REDIS_URL",
                "INSTANCE_DIR",
                "MAIL_DIR",
                "UPLOAD_DIR",
                "MAIL_BACKEND",
            )
        }
        config |= {"PLATFORM_DOMAIN": "localhost", "PLATFORM_HOST": "localhost", "PUBLIC_PORT": ""}
        built.append(create_app(config | overrides))
        return built[-1]

    yield build
    for other in built:
        with other.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


def test_the_default_limits_apply_without_settings(acme, make, fresh_app):
    make.merchant(acme, "Corner Cafe", OWNER)
    defaults = fresh_app()
    assert defaults.config["RATE_LIMITS"] == settings.RATE_LIMITS
    attacker = client_from(defaults, acme.host, "203.0.113.50")
    # 10 a minute per address (each a different e-mail, under the 5 a minute per e-mail).
    for n in range(10):
        assert post_login(attacker, f"guess{n}@example.com").status_code == 401
    assert_refused_page(post_login(attacker, "guess10@example.com"))
    # 5 a minute per e-mail, from any address.
    for n in range(5):
        assert post_login(client_from(defaults, acme.host, f"203.0.113.{60 + n}"), OWNER).status_code == 401
    assert_refused_page(post_login(client_from(defaults, acme.host, "203.0.113.70"), OWNER))


def test_limits_are_set_from_the_environment(monkeypatch):
    monkeypatch.setenv("PAYPLAT_RATELIMIT_API_KEY", "25/second;1000/minute")
    loaded = settings.load({"DATABASE_URL": "postgresql://owner@127.0.0.1/payplat"})
    assert loaded["RATE_LIMITS"]["API_KEY"] == "25/second;1000/minute"
    assert loaded["RATE_LIMITS"]["SIGN_IN_IP"] == "10/minute"

    monkeypatch.setenv("PAYPLAT_RATELIMIT_SIGN_IN_IP", "ten a minute")
    with pytest.raises(settings.ConfigError, match="PAYPLAT_RATELIMIT_SIGN_IN_IP='ten a minute' is not a rate limit"):
        settings.load({"DATABASE_URL": "postgresql://owner@127.0.0.1/payplat"})


def test_without_redis_pages_and_the_api_keep_working_and_limits_count_in_memory(app, acme, make, fresh_app):
    coffee = make.merchant(acme, "Corner Cafe", OWNER)
    key = new_key(app, acme.id, coffee)
    # Nothing listens on port 1: every connection to Redis is refused.
    no_redis = fresh_app(REDIS_URL="redis://127.0.0.1:1/0")
    no_redis.config["RATE_LIMITS"]["SIGN_IN_IP"] = "3/minute"

    owner = client_from(no_redis, acme.host, "203.0.113.80")
    assert post_login(owner, OWNER, "correct-horse-battery").status_code == 302
    assert owner.get("/merchant/", base_url=owner.base).status_code == 200
    assert api_get(no_redis, acme.host, key).status_code == 200

    attacker = client_from(no_redis, acme.host, "203.0.113.81")
    for n in range(3):
        assert post_login(attacker, f"guess{n}@example.com").status_code == 401
    assert post_login(attacker, "guess3@example.com").status_code == 429
