"""Two-factor sign-in through the web: enrolment with the code an authenticator computes from the
page, codes of the neighbouring 30 s steps, replays, recovery codes, lockout, and who must use it.

Codes are computed with `pyotp` from the secret the page shows, as a person's phone would.
Tests that depend on which 30 s step "now" is first wait until the current step has several
seconds left (`steady_step`), so a step boundary cannot fall between computing a code and the
server checking it.
"""

from __future__ import annotations

import html
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
import segno
import sqlalchemy as sa
from conftest import AUTHENTICATORS, PASSWORD
from workers import wait_for

STEP = 30
BAD_CODE = "That code is not right. Type the 6-digit code your authenticator app shows now."
REPLAYED = "That code was used already. Wait for the next one and type it."
LOCKED = "Too many failed sign-ins. This account is locked for 15 minutes."


@pytest.fixture
def acme(make):
    return make.tenant("acme", name="Acme Payments")


def body(response) -> str:
    return response.get_data(as_text=True)


def path_of(response) -> str:
    return urlsplit(response.headers["Location"]).path


def steady_step() -> int:
    """The current 30 s step, once it has at least 8 s left (waits for the next one otherwise)."""
    wait_for(lambda: 0.5 < time.time() % STEP < STEP - 8, timeout=STEP, what="a 30 s step with time left")
    return int(time.time() // STEP)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).generate_otp(step)


def wrong_code(secret: str) -> str:
    """A 6-digit code no neighbouring step of `secret` has."""
    now = int(time.time() // STEP)
    valid = {code_at(secret, step) for step in range(now - 2, now + 3)}
    return next(c for c in (f"{n:06d}" for n in range(123456, 999999, 7919)) if c not in valid)


def secret_on(page: str) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page)
    assert match, "no secret shown on the enrolment page"
    return match.group(1).replace(" ", "")


def recovery_codes_on(page: str) -> list[str]:
    listed = re.search(r'<ul class="recovery-codes" id="recovery-codes">(.*?)</ul>', page, re.S)
    assert listed, "no recovery codes on the page"
    return re.findall(r"<code>([a-z0-9-]+)</code>", listed.group(1))


def attempts(owner_engine, tenant_id) -> list[str]:
    with owner_engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT outcome FROM login_attempts WHERE tenant_id = :t ORDER BY created_at"), {"t": tenant_id}
            ).scalars()
        )


def audit_actions(owner_engine, tenant_id) -> list[str]:
    with owner_engine.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT action FROM audit_events WHERE tenant_id = :t ORDER BY created_at"), {"t": tenant_id}
            ).scalars()
        )


def enrolled(make, tenant, email: str) -> str:
    """Enrol `email` and take their authenticator out of the sign-in helper: the test types the codes."""
    make.enrol(tenant, email)
    return AUTHENTICATORS.pop(email).secret


def password_step(client, email: str, expect: str = "/login/code"):
    response = client.login(email)
    assert response.status_code == 302 and path_of(response) == expect, body(response)
    return response


def assert_signed_out(client, home: str = "/console/") -> None:
    response = client.get(home)
    assert response.status_code == 302 and path_of(response) == "/login"


# --- enrolment ---------------------------------------------------------------------------


def test_a_user_enrols_with_the_code_their_app_computes_from_the_page(site, acme, owner_engine):
    client = site(acme.host)
    assert client.login(acme.admin_email).status_code == 302
    page = body(client.get("/account/two-factor"))
    assert "Two-factor sign-in is off." in page
    secret = secret_on(page)

    # The QR code holds the provisioning address: the brand as issuer, the account, the secret.
    link = html.unescape(re.search(r'href="(otpauth://[^"]+)" id="otpauth-link"', page).group(1))
    address = urlsplit(link)
    assert address.scheme == "otpauth" and address.netloc == "totp"
    assert parse_qs(address.query) == {"secret": [secret], "issuer": ["Acme Payments"]}
    assert unquote(address.path) == f"/Acme Payments:{acme.admin_email}"
    drawn = re.search(r'<figure class="totp-qr" id="totp-qr">.*?<path[^>]* d="([^"]+)"', page, re.S).group(1)
    assert drawn == re.search(r' d="([^"]+)"', segno.make(link, error="m").svg_inline(scale=4)).group(1)

    # A wrong code changes nothing: still off, the same secret to scan.
    response = client.submit("/account/two-factor/enable", {"code": wrong_code(secret)}, "/account/two-factor")
    assert response.status_code == 422 and BAD_CODE in body(response)
    assert secret_on(body(response)) == secret

    response = client.submit("/account/two-factor/enable", {"code": pyotp.TOTP(secret).now()}, "/account/two-factor")
    assert response.status_code == 200
    codes = recovery_codes_on(body(response))
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "Two-factor sign-in is on." in body(response)

    # Shown once: the account page no longer has them, nor the secret.
    page = body(client.get("/account/two-factor"))
    assert "Two-factor sign-in is on." in page and "10 recovery codes are left." in page
    assert codes[0] not in page and secret not in page.replace(" ", "")
    with owner_engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT totp_secret, recovery_code_hashes::text FROM users WHERE email = :e"),
            {"e": acme.admin_email},
        ).one()
    assert secret not in stored[0] and all(code.replace("-", "") not in stored[1] for code in codes)
    assert "$argon2id$" in stored[1]
    assert "user.two_factor_enabled" in audit_actions(owner_engine, acme.id)

    # Signing in now needs the code: the next step's, since this step's was just used.
    client.submit("/logout", {}, "/console/")
    client = site(acme.host)
    password_step(client, acme.admin_email)
    assert_signed_out(client)
    next_code = code_at(secret, pyotp.TOTP(secret).timecode(time.time()) + 1)
    response = client.submit("/login/code", {"code": next_code})
    assert response.status_code == 302 and path_of(response) == "/console/"
    assert client.get("/console/").status_code == 200


# --- the code step -----------------------------------------------------------------------


def test_codes_of_the_previous_and_next_step_are_accepted_two_steps_away_and_replays_refused(make, site, acme):
    secret = enrolled(make, acme, acme.admin_email)
    now = steady_step()

    client = site(acme.host)
    password_step(client, acme.admin_email)
    for far in (now - 2, now + 2):
        response = client.submit("/login/code", {"code": code_at(secret, far)})
        assert response.status_code == 401 and BAD_CODE in body(response)
        assert_signed_out(client)
    response = client.submit("/login/code", {"code": code_at(secret, now - 1)})
    assert response.status_code == 302 and path_of(response) == "/console/"
    assert client.get("/console/").status_code == 200

    # The same code again (someone who saw it) is refused.
    thief = site(acme.host)
    password_step(thief, acme.admin_email)
    response = thief.submit("/login/code", {"code": code_at(secret, now - 1)})
    assert response.status_code == 401 and REPLAYED in body(response)
    assert_signed_out(thief)

    second = site(acme.host)
    password_step(second, acme.admin_email)
    response = second.submit("/login/code", {"code": f"{code_at(secret, now + 1)[:3]} {code_at(secret, now + 1)[3:]}"})
    assert response.status_code == 302 and path_of(response) == "/console/"

    # After the next step's code, this step's (older) code is refused too.
    third = site(acme.host)
    password_step(third, acme.admin_email)
    response = third.submit("/login/code", {"code": code_at(secret, now)})
    assert response.status_code == 401 and REPLAYED in body(response)


def test_a_wrong_code_leaves_the_person_signed_out(app, make, site, acme, monkeypatch):
    secret = enrolled(make, acme, acme.admin_email)
    client = site(acme.host)
    password_step(client, acme.admin_email, expect="/login/code")
    # Half signed in: nothing opens.
    for page in ("/console/", "/console/users", "/account/two-factor"):
        response = client.get(page)
        assert response.status_code == 302 and path_of(response) == "/login", page
    response = client.submit("/login/code", {"code": wrong_code(secret)})
    assert response.status_code == 401 and BAD_CODE in body(response)
    assert_signed_out(client)
    assert "Sign out" not in body(client.get("/login/code"))

    # The code step does not wait for ever.
    monkeypatch.setitem(app.config, "TWO_FACTOR_PENDING_SECONDS", -1)
    late = site(acme.host)
    password_step(late, acme.admin_email)
    response = late.submit("/login/code", {"code": pyotp.TOTP(secret).now()}, "/login")
    assert response.status_code == 302 and path_of(response) == "/login"
    assert "Your sign-in has expired. Sign in again." in body(late.get("/login"))
    assert_signed_out(late)


def test_a_recovery_code_works_once(make, site, acme, owner_engine):
    make.enrol(acme, acme.admin_email)
    codes = list(AUTHENTICATORS.pop(acme.admin_email).recovery_codes)

    client = site(acme.host)
    password_step(client, acme.admin_email)
    response = client.submit("/login/code", {"code": codes[0]})
    assert response.status_code == 302 and path_of(response) == "/console/"
    assert "You signed in with a recovery code; 9 are left." in body(client.get("/console/"))

    again = site(acme.host)
    password_step(again, acme.admin_email)
    response = again.submit("/login/code", {"code": codes[0]})
    assert response.status_code == 401 and BAD_CODE in body(response)
    assert_signed_out(again)
    # Another one, typed in capitals without the dash, still works.
    response = again.submit("/login/code", {"code": codes[1].replace("-", "").upper()})
    assert response.status_code == 302 and path_of(response) == "/console/"
    assert attempts(owner_engine, acme.id)[-4:] == ["recovery_code", "password_ok", "bad_code", "recovery_code"]


def test_wrong_codes_lock_the_account_just_as_wrong_passwords_do(make, site, acme, owner_engine):
    secret = enrolled(make, acme, acme.admin_email)
    client = site(acme.host)
    for _ in range(3):
        assert client.login(acme.admin_email, "not-the-password").status_code == 401
    password_step(client, acme.admin_email)
    for _ in range(2):
        response = client.submit("/login/code", {"code": wrong_code(secret)})
        assert response.status_code == 401
    # Five failures: the right code no longer opens the account.
    response = client.submit("/login/code", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 302 and path_of(response) == "/login"
    assert LOCKED in body(client.get("/login"))
    assert_signed_out(client)
    # Nor does the right password.
    response = site(acme.host).login(acme.admin_email)
    assert response.status_code == 401 and LOCKED in body(response)
    assert attempts(owner_engine, acme.id) == [
        "bad_password",
        "bad_password",
        "bad_password",
        "password_ok",
        "bad_code",
        "bad_code",
        "locked",
        "locked",
    ]


def test_five_wrong_codes_alone_lock_the_account(make, site, acme):
    secret = enrolled(make, acme, acme.admin_email)
    client = site(acme.host)
    password_step(client, acme.admin_email)
    for _ in range(5):
        assert client.submit("/login/code", {"code": wrong_code(secret)}).status_code == 401
    response = client.submit("/login/code", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 302 and path_of(response) == "/login"
    assert LOCKED in body(client.get("/login"))
    assert_signed_out(client)


# --- who must use it ---------------------------------------------------------------------


def test_a_tenant_requiring_it_sends_its_staff_to_enrol_before_anything_else(make, site, acme, owner_engine):
    operator = "operator@acme.example.com"
    make.user(acme, operator, "operator")
    merchant_id = make.merchant(acme, "Corner Shop", "owner@corner.example.com")
    assert merchant_id
    admin = site(acme.host)
    assert admin.login(acme.admin_email).status_code == 302

    response = admin.submit("/console/security", {"require_2fa_staff": "y"})
    assert response.status_code == 302
    assert "tenant.two_factor_policy_changed" in audit_actions(owner_engine, acme.id)

    # The admin is staff too: from now on every page of theirs leads to the enrolment page.
    response = admin.get("/console/merchants")
    assert response.status_code == 302 and path_of(response) == "/account/two-factor"
    admin_page = body(admin.get("/account/two-factor"))
    assert "Sign-in security saved." in admin_page
    assert "Your account must use two-factor sign-in. Set it up to continue." in admin_page

    # The operator, right after the password: enrolment, not signed in until it is done.
    client = site(acme.host)
    password_step(client, operator, expect="/login/enrol")
    assert_signed_out(client)
    page = body(client.get("/login/enrol"))
    secret = secret_on(page)
    response = client.submit("/login/enrol", {"code": wrong_code(secret)})
    assert response.status_code == 422 and BAD_CODE in body(response)
    assert_signed_out(client)
    response = client.submit("/login/enrol", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200 and len(recovery_codes_on(body(response))) == 10
    assert client.get("/console/").status_code == 200
    with owner_engine.connect() as conn:
        outcomes = conn.execute(
            sa.text("SELECT outcome FROM login_attempts WHERE email = :e ORDER BY created_at"), {"e": operator}
        ).scalars()
        assert list(outcomes) == ["password_ok", "bad_code", "success"]

    # Merchants' users are not required: the owner signs in with the password alone.
    owner = site(acme.host)
    response = owner.login("owner@corner.example.com")
    assert response.status_code == 302 and path_of(response) == "/merchant/"

    # The admin enrols from that page, and then may work again.
    secret = secret_on(admin_page)
    response = admin.submit("/account/two-factor/enable", {"code": pyotp.TOTP(secret).now()}, "/account/two-factor")
    assert response.status_code == 200 and len(recovery_codes_on(body(response))) == 10
    assert admin.get("/console/merchants").status_code == 200

    admin.submit("/console/security", {"require_2fa_staff": "", "require_2fa_merchants": "y"})
    owner = site(acme.host)
    password_step(owner, "owner@corner.example.com", expect="/login/enrol")
    assert_signed_out(owner, "/merchant/")


def test_a_platform_admin_must_enrol(make, site, owner_engine):
    root = make.platform_admin(enrolled=False)
    client = site("localhost")
    password_step(client, root, expect="/login/enrol")
    response = client.get("/platform/")
    assert response.status_code == 302 and path_of(response) == "/login"
    secret = secret_on(body(client.get("/login/enrol")))
    assert "issuer=Payment%20Platform" in html.unescape(body(client.get("/login/enrol")))
    response = client.submit("/login/enrol", {"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 200 and len(recovery_codes_on(body(response))) == 10
    assert client.get("/platform/").status_code == 200
    # Required: it cannot be switched off.
    page = body(client.get("/account/two-factor"))
    assert "Your account must use two-factor sign-in, so it cannot be switched off." in page
    with owner_engine.connect() as conn:
        outcomes = list(
            conn.execute(
                sa.text("SELECT outcome FROM platform_login_attempts WHERE email = :e ORDER BY created_at"), {"e": root}
            ).scalars()
        )
    assert outcomes == ["password_ok", "2fa_enabled", "success"]


def test_the_sign_in_helper_completes_the_code_step_for_enrolled_platform_admins(make, site):
    root = make.platform_admin()
    for _ in range(4):  # more sign-ins than one step has codes: the helper falls back to recovery codes
        client = site("localhost")
        response = client.login(root)
        assert response.status_code == 302 and path_of(response) == "/platform/"
        assert client.get("/platform/").status_code == 200


# --- managing it -------------------------------------------------------------------------


def test_new_recovery_codes_replace_the_old_and_switching_off_needs_password_and_code(make, site, acme, owner_engine):
    authenticator = make.enrol(acme, acme.admin_email)
    old_codes = list(authenticator.recovery_codes)
    client = site(acme.host)
    assert client.login(acme.admin_email).status_code == 302  # the helper types the code

    response = client.submit(
        "/account/two-factor/recovery-codes", {"current_code": wrong_code(authenticator.secret)}, "/account/two-factor"
    )
    assert response.status_code == 422 and BAD_CODE in body(response)
    response = client.submit(
        "/account/two-factor/recovery-codes", {"current_code": authenticator.next_code()}, "/account/two-factor"
    )
    assert response.status_code == 200
    new_codes = recovery_codes_on(body(response))
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)

    response = client.submit(
        "/account/two-factor/disable",
        {"password": "not-the-password", "code": authenticator.next_code()},
        "/account/two-factor",
    )
    assert response.status_code == 422 and "The password is not correct." in body(response)
    assert "Two-factor sign-in is on." in body(client.get("/account/two-factor"))
    response = client.submit(
        "/account/two-factor/disable", {"password": PASSWORD, "code": old_codes[0]}, "/account/two-factor"
    )
    assert response.status_code == 422 and BAD_CODE in body(response)
    response = client.submit(
        "/account/two-factor/disable", {"password": PASSWORD, "code": new_codes[0]}, "/account/two-factor"
    )
    assert response.status_code == 302
    assert "Two-factor sign-in is off." in body(client.get("/account/two-factor"))
    actions = audit_actions(owner_engine, acme.id)
    assert actions[-3:] == ["user.two_factor_enabled", "user.recovery_codes_renewed", "user.two_factor_disabled"]

    AUTHENTICATORS.pop(acme.admin_email)
    response = site(acme.host).login(acme.admin_email)
    assert response.status_code == 302 and path_of(response) == "/console/"


def test_one_code_typed_in_two_places_at_once_signs_in_only_one(make, site, acme):
    secret = enrolled(make, acme, acme.admin_email)
    clients = [site(acme.host), site(acme.host)]
    for client in clients:
        password_step(client, acme.admin_email)
    tokens = [client.csrf_token("/login") for client in clients]
    code = code_at(secret, steady_step())
    start = threading.Barrier(len(clients))

    def type_code(client, token):
        start.wait(timeout=10)
        return client.post("/login/code", data={"code": code, "csrf_token": token}).status_code

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        statuses = sorted(pool.map(type_code, clients, tokens))
    assert statuses == [302, 401]
