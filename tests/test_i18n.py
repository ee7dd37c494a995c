"""Chinese and English: the tenant's default language, a person's own choice (kept on the account,
or in a cookie before signing in), e-mails in the recipient's language, error pages, amounts and
times per locale and time zone, and catalogues that leave nothing untranslated."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import flask_babel
import pytest
import sqlalchemy as sa
from babel.messages.pofile import read_po
from conftest import text_of
from flask import g

from portal import i18n

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "portal" / "translations"
TEMPLATE_DIRS = [*ROOT.glob("themes/*/templates"), *ROOT.glob("portal/**/templates")]
OWNER = "owner@corner.example.com"

# Chinese on the sign-in page and the console, English as today.
ZH_SIGN_IN = "登录您的账户"
EN_SIGN_IN = "Sign in to your account"


def body(response) -> str:
    return response.get_data(as_text=True)


def set_default_locale(owner_engine, tenant_id, locale: str) -> None:
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE tenants SET default_locale = :l WHERE id = :t"), {"l": locale, "t": tenant_id})


@pytest.fixture
def acme(make):
    tenant = make.tenant("acme", name="Acme Pay")
    make.merchant(tenant, "Corner Shop", OWNER)
    return tenant


# --- which language a page speaks ------------------------------------------------------------


def test_the_tenant_admin_sets_chinese_and_every_page_follows(site, acme, owner_engine):
    anonymous = site(acme.host)
    assert EN_SIGN_IN in body(anonymous.get("/login"))

    admin = site(acme.host)
    admin.login(acme.admin_email)
    page = body(admin.get("/console/branding"))
    assert 'id="preferences-form"' in page and '<option selected value="en">English</option>' in page

    # A time zone nobody knows is refused next to its field, what was chosen kept.
    response = admin.submit(
        "/console/branding/preferences", {"default_locale": "zh", "time_zone": "Mars/Base"}, "/console/branding"
    )
    assert response.status_code == 422
    assert re.search(r'id="time_zone-error" class="error">[^<]+</p>', body(response))

    response = admin.submit(
        "/console/branding/preferences",
        {"default_locale": "zh", "time_zone": "Asia/Shanghai"},
        "/console/branding",
        follow_redirects=True,
    )
    assert response.status_code == 200
    html = body(response)
    assert "语言和时区已保存。" in html  # the flash already speaks the new language
    assert '<html lang="zh-CN">' in html
    with owner_engine.connect() as conn:
        row = conn.execute(sa.text("SELECT default_locale, time_zone FROM tenants WHERE id = :t"), {"t": acme.id}).one()
        changes = conn.execute(
            sa.text("SELECT changes FROM audit_events WHERE tenant_id = :t AND action = 'tenant.preferences_changed'"),
            {"t": acme.id},
        ).scalar_one()
    assert tuple(row) == ("zh", "Asia/Shanghai")
    assert changes == {
        "default_locale": {"before": "en", "after": "zh"},
        "time_zone": {"before": "UTC", "after": "Asia/Shanghai"},
    }

    # Everyone without a choice of their own now reads Chinese, whatever the browser asks for.
    html = body(site(acme.host).get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}))
    assert ZH_SIGN_IN in html and EN_SIGN_IN not in html
    assert ">登录</button>" in html and 'lang="zh-CN"' in html


def test_a_tenant_cannot_change_its_own_row_beyond_language_and_time_zone(app, acme, owner_engine):
    """The tenant's own scope may update its language and time zone (the console's form), and
    nothing else of its row: not its name, slug or status."""
    from core.db import db
    from tenants.isolation import tenant_context
    from tenants.models import Tenant

    with app.app_context(), tenant_context(db.session, acme.id):
        tenant = db.session.get(Tenant, acme.id)
        tenant.status = "suspended"
        with pytest.raises(sa.exc.DBAPIError, match="only its default language and time zone"):
            db.session.commit()
        db.session.rollback()
        db.session.remove()
    with owner_engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT status FROM tenants WHERE id = :t"), {"t": acme.id}).scalar_one() == "active"
        )


def test_the_browser_language_applies_where_no_tenant_decides(site):
    """The platform host has no tenant default: the browser's Accept-Language decides, then English.
    (On a tenant's host the tenant's default, English or Chinese, comes first.)"""
    client = site("localhost")
    assert ZH_SIGN_IN in body(client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}))
    assert EN_SIGN_IN in body(client.get("/login", headers={"Accept-Language": "de-DE"}))


def test_an_anonymous_visitor_switches_with_a_cookie_and_is_sent_back(site, acme):
    client = site(acme.host)
    response = client.submit("/language", {"locale": "zh", "next": "/password/forgot"}, "/login")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/password/forgot"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("locale=zh;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    html = body(client.get("/password/forgot"))
    assert "设置新密码" in html and "发送链接" in html
    # The switcher shows the current language as chosen and offers the other.
    assert re.search(r'value="zh"[^>]*aria-current="true"', html)

    # Only a path on this host is a way back: anything else goes to the start page.
    for target in ("https://evil.example.com/", "//evil.example.com/x", "/\\evil.example.com"):
        response = client.submit("/language", {"locale": "en", "next": target}, "/login")
        assert response.status_code == 302
        assert urlsplit(response.headers["Location"]).netloc in ("", acme.host), target
        assert urlsplit(response.headers["Location"]).path == "/"
    assert EN_SIGN_IN in body(client.get("/login"))

    # Without the form's token, or for a language we do not have, nothing changes.
    assert client.post("/language", data={"locale": "zh", "next": "/login"}).status_code == 400
    assert client.submit("/language", {"locale": "fr", "next": "/login"}, "/login").status_code == 400
    assert EN_SIGN_IN in body(client.get("/login"))


def test_a_users_choice_overrides_the_tenant_and_follows_them_to_the_next_sign_in(site, acme, owner_engine):
    set_default_locale(owner_engine, acme.id, "zh")
    first = site(acme.host)
    first.login(OWNER)
    assert "支付" in body(first.get("/merchant/")) and ">Payments<" not in body(first.get("/merchant/"))

    response = first.submit("/language", {"locale": "en", "next": "/merchant/payments"}, "/merchant/")
    assert urlsplit(response.headers["Location"]).path == "/merchant/payments"
    html = body(first.get("/merchant/payments"))
    assert "<h1>Payments</h1>" in html
    with owner_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT locale FROM users WHERE email = :e"), {"e": OWNER}).scalar_one() == "en"

    # Another browser, no cookie: the sign-in page is the tenant's Chinese, the account is English.
    second = site(acme.host)
    assert ZH_SIGN_IN in body(second.get("/login"))
    second.login(OWNER)
    assert "<h1>Payments</h1>" in body(second.get("/merchant/payments"))
    # The tenant's other people still read Chinese.
    admin = site(acme.host)
    admin.login(acme.admin_email)
    assert "最近动态" in body(admin.get("/console/"))


def test_the_merchant_api_stays_english(site, acme, owner_engine):
    set_default_locale(owner_engine, acme.id, "zh")
    client = site(acme.host)
    response = client.get("/v1/payment_intents", headers={"Accept-Language": "zh-CN"})
    assert response.status_code == 401
    message = response.get_json()["error"]["message"]
    assert re.search(r"[A-Za-z]", message) and not re.search(r"[\u4e00-\u9fff]", message)


# --- error pages and e-mails ----------------------------------------------------------------


def test_error_pages_speak_the_tenants_language(site, acme, owner_engine):
    set_default_locale(owner_engine, acme.id, "zh")
    response = site(acme.host).get("/no-such-page")
    assert response.status_code == 404
    html = body(response)
    assert "页面不存在" in html and "此地址没有页面。" in html and "Page not found" not in html

    staff = site(acme.host)
    staff.login(OWNER)
    response = staff.get("/console/")
    assert response.status_code == 403 and "您的账户无权打开此页面。" in body(response)


def test_a_password_reset_arrives_in_chinese_for_a_chinese_tenant(site, acme, owner_engine, outbox):
    set_default_locale(owner_engine, acme.id, "zh")
    client = site(acme.host)
    response = client.submit("/password/forgot", {"email": OWNER}, follow_redirects=True)
    assert "如果该邮箱对应的账户存在" in body(response)
    [message] = outbox()
    assert message["Subject"] == "Acme Pay：设置新密码"
    text = text_of(message)
    assert "有人申请修改您在 Acme Pay 的账户密码。" in text and "分钟内有效" in text
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "<b>Acme Pay</b>" in html and "设置新密码" in html


def test_an_invitation_follows_the_recipients_own_language(site, acme, owner_engine, outbox):
    """A person who chose English gets English mail from a Chinese tenant; a new person gets Chinese."""
    set_default_locale(owner_engine, acme.id, "zh")
    with owner_engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET locale = 'en' WHERE email = :e"), {"e": acme.admin_email})
    admin = site(acme.host)
    admin.login(acme.admin_email)
    response = admin.submit("/console/users", {"email": "new@acme.example.com", "name": "", "role": "finance"})
    assert response.status_code == 302
    response = admin.submit("/password/forgot", {"email": acme.admin_email}, "/console/users")
    messages = {m["To"]: m for m in outbox()}
    invitation = text_of(messages["new@acme.example.com"])
    assert "您受邀以财务身份加入 Acme Pay。" in invitation
    assert messages["new@acme.example.com"]["Subject"] == "Acme Pay：设置您的账户"


# --- amounts, numbers, dates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "amount", "currency", "shown"),
    [
        ("en", 1234567, "CNY", "12,345.67 CNY"),
        ("zh", 1234567, "CNY", "¥12,345.67"),
        ("en", -250, "USD", "-2.50 USD"),
        ("zh", 1234567, "USD", "US$12,345.67"),
        ("en", 1234567, "JPY", "1,234,567 JPY"),
        ("zh", 1234567, "JPY", "JP¥1,234,567"),
        ("en", 10**17 + 1, "EUR", "1,000,000,000,000,000.01 EUR"),  # exact: no float in between
        ("zh", None, "CNY", "—"),
    ],
)
def test_amounts_are_formatted_per_locale_from_minor_units(app, locale, amount, currency, shown):
    with app.test_request_context("/"), i18n.language(locale):
        assert i18n.format_amount(amount, currency) == shown
        template = app.jinja_env.from_string("{{ amount|money(currency) }}")
        assert template.render(amount=amount, currency=currency) == shown


def test_instants_are_shown_in_the_tenants_zone_and_locale(app):
    instant = datetime(2024, 3, 9, 16, 30, 5, tzinfo=UTC)  # 00:30 on 10 March in Shanghai
    with app.test_request_context("/"):
        g.tenant = SimpleNamespace(time_zone="Asia/Shanghai", default_locale="zh")
        with i18n.language("en"):
            assert i18n.format_when(instant) == "2024-03-10 00:30"
            assert i18n.format_when(instant, seconds=True) == "2024-03-10 00:30:05"
            assert i18n.format_utc(instant) == "2024-03-09 16:30 UTC"
            assert i18n.format_day(date(2024, 3, 9)) == "2024-03-09"
            assert i18n.format_percent("0.0125") == "1.25%"
            assert i18n.format_number(1234567) == "1,234,567"
        with i18n.language("zh"):
            assert i18n.format_when(instant) == "2024年3月10日 00:30"
            assert i18n.format_day(instant) == "2024年3月10日"
            assert i18n.format_utc(instant) == "2024年3月9日 16:30 UTC"
            assert i18n.format_percent("0.0125") == "1.25%"
        g.tenant = SimpleNamespace(time_zone="UTC", default_locale="en")
        flask_babel.refresh()
        with i18n.language("en"):
            assert i18n.format_when(instant) == "2024-03-09 16:30"


def test_payment_list_shows_chinese_amounts_and_shanghai_times(site, acme, owner_engine, app):
    """The merchant's list as a Chinese reader sees it: the amount in the locale's format, the time
    in the tenant's zone, the state in words."""
    from core.db import db
    from payments import intents
    from payments.channel_accounts import ChannelAccountInput, create_channel_account
    from payments.models import PaymentIntent
    from tenants.audit import Actor
    from tenants.isolation import tenant_context
    from tenants.models import Merchant

    with app.app_context(), tenant_context(db.session, acme.id):
        create_channel_account(
            acme.id,
            ChannelAccountInput(name="Sandbox", type="sandbox", currency="CNY", products=["card"]),
            {"card"},
            Actor.system(),
        )
        merchant_id = db.session.execute(sa.select(Merchant.id).where(Merchant.tenant_id == acme.id)).scalar_one()
        intent_id = intents.create(
            intents.MerchantContext(acme.id, merchant_id, False),
            amount=1234567,
            currency="cny",
            payment_method="pm_card_visa",
            confirm=True,
        ).id
        db.session.remove()
    with owner_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE tenants SET default_locale = 'zh', time_zone = 'Asia/Shanghai' WHERE id = :t"),
            {"t": acme.id},
        )
        conn.execute(
            sa.update(PaymentIntent)
            .where(PaymentIntent.tenant_id == acme.id, PaymentIntent.id == intent_id)
            .values(created_at=datetime(2024, 3, 9, 16, 30, tzinfo=UTC))
        )
    client = site(acme.host)
    client.login(OWNER)
    html = body(client.get("/merchant/payments?mode=test"))
    row = re.search(rf'<a href="/merchant/payments/{intent_id}">.*?</tr>', html, re.S).group(0)
    assert "¥12,345.67" in row and "2024年3月10日 00:30" in row and ">成功<" in row
    assert "创建时间（Asia/Shanghai）" in html


# --- the catalogues leave nothing out ---------------------------------------------------------


def _catalogue(path: Path):
    with path.open("rb") as handle:
        return read_po(handle)


def test_every_message_has_a_chinese_translation_with_the_same_placeholders():
    template = _catalogue(TRANSLATIONS / "messages.pot")
    chinese = _catalogue(TRANSLATIONS / "zh" / "LC_MESSAGES" / "messages.po")
    placeholder = re.compile(r"%\(\w+\)s")
    problems = []
    for message in template:
        if not message.id:
            continue
        translated = chinese.get(message.id, context=message.context)
        strings = () if translated is None else translated.string
        strings = strings if isinstance(strings, tuple) else (strings,)
        if translated is None or translated.fuzzy or not all(strings):
            problems.append(f"untranslated: {message.id!r}")
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        wanted = set(placeholder.findall(ids[-1]))
        for text in strings:
            if set(placeholder.findall(text)) != wanted:
                problems.append(f"placeholders differ: {message.id!r} -> {text!r}")
    assert problems == [], "run `make translations` and translate:\n" + "\n".join(problems)


def test_the_template_catalogue_holds_every_marked_message(tmp_path):
    """A string wrapped in _() since the last `make translations` would show in English to Chinese
    readers: the extraction of today's code must find nothing the catalogue lacks."""
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            *["-k", "_l", "-k", "lazy_gettext", "-k", "lazy_pgettext:1c,2", "-k", "lazy_ngettext:1,2"],
            "-o",
            str(fresh),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    known = {(m.context, m.id) for m in _catalogue(TRANSLATIONS / "messages.pot") if m.id}
    missing = [m.id for m in _catalogue(fresh) if m.id and (m.context, m.id) not in known]
    assert missing == [], "run `make translations`, then translate these in messages.po:\n" + "\n".join(
        map(repr, missing)
    )


# A template's text may hold these untranslated: codes and names that read the same in Chinese.
UNTRANSLATED_WORDS = re.compile(
    r"\b(UTC|IBAN|BIC|CSV|PDF|HTTP|HTTPS|API|URL|ID|ISO|pain\.001|T\+N|T|N|Stripe|JSON)\b|&[a-z]+;|&#\d+;"
)
TOKEN = re.compile(r"(\{#.*?#\}|\{%-?.*?-?%\}|\{\{-?.*?-?\}\}|<!--.*?-->|<[^>]*>)", re.S)
SKIPPED_ELEMENTS = re.compile(r"<(script|style|pre|code)\b", re.I)
ATTRIBUTE_TEXT = re.compile(r'\b(placeholder|title|alt|aria-label)="([^"{}]*[A-Za-z][^"{}]*)"')
LITERAL_HINT = re.compile(r"\bhint=(['\"])(?:(?!\1).)*[A-Za-z]{3,}(?:(?!\1).)*\1")


def untranslated_text(source: str) -> list[str]:
    """What a template shows as text without `_()`: text between tags and template tags that has
    Latin letters, labelling attributes written out, and hints passed as string literals."""
    found = []
    skipping = None
    for index, token in enumerate(TOKEN.split(source)):
        if index % 2:  # a tag, a template tag or a comment
            if skipping:
                if re.match(rf"</{skipping}\s*>", token, re.I):
                    skipping = None
                continue
            opened = SKIPPED_ELEMENTS.match(token)
            if opened and not token.endswith("/>"):
                skipping = opened.group(1)
            found += [value for _name, value in ATTRIBUTE_TEXT.findall(token)]
            if token.startswith("{{") or token.startswith("{%"):
                found += [m.group(0) for m in LITERAL_HINT.finditer(token)]
            continue
        if skipping:
            continue
        if re.search(r"[A-Za-z]", UNTRANSLATED_WORDS.sub("", token)):
            found.append(token.strip())
    return found


def test_the_checker_finds_english_outside_gettext():
    assert untranslated_text("<p>Payments</p>") == ["Payments"]
    assert untranslated_text('<p>{{ _("Payments") }} · UTC</p><pre>import stripe</pre>') == []
    assert untranslated_text('<input placeholder="Search">') == ["Search"]
    assert untranslated_text("{{ field(form.x, hint='Applies at once.') }}") == ["hint='Applies at once.'"]
    assert untranslated_text("{% if x %}{{ y }}{% endif %}—") == []


@pytest.mark.parametrize(
    "template",
    sorted({p for d in TEMPLATE_DIRS for p in d.rglob("*") if p.suffix in (".html", ".txt")}),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_templates_wrap_every_visible_string(template):
    assert untranslated_text(template.read_text(encoding="utf-8")) == []
