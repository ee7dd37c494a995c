"""Tenant admins keep fee schedules in the console (versions, rules, tiers, the default, which
schedule a merchant is on); operators read them; platform admins set each tenant's platform fee."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from billing.models import FeeSchedule, FeeScheduleVersion, MerchantFeeSchedule, PlatformFee
from tenants.models import AuditEvent, Tenant

FORBIDDEN = "Your account is not allowed to open this page."
OPERATOR = "operator@acme.example.com"
FINANCE = "finance@acme.example.com"
OWNER = "owner@coffee.example.com"
ROWS = 8


@pytest.fixture
def acme(make):
    tenant = make.tenant("acme", name="Acme Payments")
    make.user(tenant, OPERATOR, "operator")
    make.user(tenant, FINANCE, "finance")
    merchant = make.merchant(tenant, "Coffee", OWNER)
    return tenant, merchant


@pytest.fixture
def admin(acme, site):
    tenant, _ = acme
    client = site(tenant.host)
    assert client.login(tenant.admin_email).status_code == 302
    return client


def _signed_in(site, tenant, email):
    client = site(tenant.host)
    assert client.login(email).status_code == 302
    return client


def body(response) -> str:
    return response.get_data(as_text=True)


def _rows(*rules: dict, rows: int = ROWS) -> dict:
    """The add-version form: `rules` in the first rows (None: a blank row), the others blank."""
    data = {}
    padded = list(rules) + [None] * (rows - len(rules))
    for index, rule in enumerate(padded):
        for name in ("product", "currency", "percent", "fixed", "minimum", "maximum", "volume_from"):
            data[f"rules-{index}-{name}"] = (rule or {}).get(name, "")
    return data


def _row_html(html: str, index: int) -> str:
    match = re.search(rf'<tr class="rule-row" id="rule-row-{index}">(.*?)</tr>', html, re.S)
    assert match, f"no rule row {index} on the page"
    return match.group(1)


def _schedules(owner_engine) -> dict[str, sa.Row]:
    with owner_engine.connect() as conn:
        return {row.name: row for row in conn.execute(sa.select(FeeSchedule.__table__))}


def _versions(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(FeeScheduleVersion.__table__).order_by(FeeScheduleVersion.number)).all()


def _assignments(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(MerchantFeeSchedule.__table__)).all()


def _actions(owner_engine) -> list[str]:
    with owner_engine.connect() as conn:
        return list(conn.execute(sa.select(AuditEvent.action).order_by(AuditEvent.created_at)).scalars())


def _create(client, name: str):
    return client.submit("/console/fees", {"name": name})


def _schedule_id(owner_engine, name: str):
    return _schedules(owner_engine)[name].id


CARD = {"product": "card", "currency": "USD", "percent": "2.9", "fixed": "0.30", "volume_from": "0"}
CARD_TIER = {"product": "card", "currency": "usd", "percent": "1.9", "fixed": "0.20", "volume_from": "10000"}
ALIPAY = {"product": "alipay_qr", "currency": "CNY", "percent": "0.6", "minimum": "1.00", "maximum": "50.00"}


def _add_version(client, schedule_id, *rules, follow_redirects=False, **fields):
    path = f"/console/fees/{schedule_id}"
    return client.submit(
        f"{path}/versions",
        {"effective_from": "", "note": "", **fields, **_rows(*rules)},
        form_page=path,
        follow_redirects=follow_redirects,
    )


# --- schedules ----------------------------------------------------------------------------


def test_create_a_schedule(admin, owner_engine):
    listing = admin.get("/console/fees")
    assert listing.status_code == 200
    assert "No fee schedules yet" in body(listing)

    page = admin.submit("/console/fees", {"name": "Standard"}, follow_redirects=True)
    html = body(page)
    assert "Standard is created." in html and "It is the default" in html
    assert "No version is in force: merchants on this schedule pay no fees." in html
    assert {name: row.is_default for name, row in _schedules(owner_engine).items()} == {"Standard": True}

    # The second schedule is not the default; the list shows both, the default first and marked.
    assert _create(admin, "High volume").status_code == 302
    html = body(admin.get("/console/fees"))
    assert "High volume is created." in html and "It is the default" not in html
    listing = re.search(r'<table class="table" id="schedule-list">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r'<a href="/console/fees/[0-9a-f-]+">([^<]+)</a>', listing) == ["Standard", "High volume"]
    assert re.search(r"Standard</a> <strong class=\"badge\">Default</strong>", listing)
    assert "High volume</a></td>" in listing
    assert listing.count("None: no fees are charged") == 2
    assert {name: row.is_default for name, row in _schedules(owner_engine).items()} == {
        "Standard": True,
        "High volume": False,
    }
    assert _actions(owner_engine).count("fee_schedule.created") == 2


def test_a_bad_schedule_name_is_explained_and_kept(admin, owner_engine):
    _create(admin, "Standard")
    empty = _create(admin, "  ")
    assert empty.status_code == 422
    assert 'id="name-error" class="error">Give the schedule a name of at most 120 characters.' in body(empty)
    taken = _create(admin, "standard")
    assert taken.status_code == 422
    assert "There is already a schedule named standard." in body(taken)
    assert 'value="standard"' in body(taken)
    assert list(_schedules(owner_engine)) == ["Standard"]


# --- versions -----------------------------------------------------------------------------


def test_add_a_version_with_two_products_and_a_tier(admin, owner_engine):
    _create(admin, "Standard")
    schedule_id = _schedule_id(owner_engine, "Standard")
    # Rows 0, 1 and 3 carry rules; row 2 is left blank and ignored.
    page = _add_version(admin, schedule_id, CARD, CARD_TIER, None, ALIPAY, note="Launch prices", follow_redirects=True)
    html = body(page)
    assert "Version 1 of Standard is saved. The next payment uses the new fees." in html

    [version] = _versions(owner_engine)
    assert version.number == 1 and version.note == "Launch prices" and version.created_by == "admin@acme.example.com"
    assert version.rules == [
        {"product": "alipay_qr", "currency": "CNY", "percent": "0.6", "fixed": 0, "minimum": 100, "maximum": 5000,
         "volume_from": 0},
        {"product": "card", "currency": "USD", "percent": "2.9", "fixed": 30, "minimum": None, "maximum": None,
         "volume_from": 0},
        {"product": "card", "currency": "USD", "percent": "1.9", "fixed": 20, "minimum": None, "maximum": None,
         "volume_from": 1000000},
    ]  # fmt: skip

    # The rules in force, each with the fee on 100 of its currency.
    rules = re.findall(r'<tr class="fee-rule">(.*?)</tr>', html, re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", rule, re.S) for rule in rules]
    assert [c[:4] for c in cells] == [
        ["Alipay QR", "CNY", "0.00 CNY", "0.6%, min 1.00 CNY, max 50.00 CNY"],
        ["Card", "USD", "0.00 USD", "2.9% + 0.30 USD"],
        ["Card", "USD", "10,000.00 USD", "1.9% + 0.20 USD"],
    ]
    assert cells[0][4].startswith("1.00 CNY on 100.00 CNY") and "minimum fee 1.00 CNY: 0.40 CNY" in cells[0][4]
    assert cells[1][4].startswith("3.20 USD on 100.00 USD") and "fixed 0.30 USD: 0.30 USD" in cells[1][4]
    assert cells[2][4].startswith("2.10 USD on 100.00 USD")
    assert "Version 1, in force since" in html

    # The add-version form starts from the fees in force, in major units.
    assert 'name="rules-2-volume_from" size="10" type="text" value="10000.00"' in _row_html(html, 2)
    assert 'value="0.30"' in _row_html(html, 1)
    assert re.search(r'<option selected value="alipay_qr">', _row_html(html, 0))
    assert 'value=""' in _row_html(html, 3)

    listing = body(admin.get("/console/fees"))
    assert "Version 1, since" in listing
    assert "fee_schedule.version_added" in _actions(owner_engine)


def test_a_later_version_is_scheduled_in_the_tenants_time_zone(admin, acme, owner_engine):
    tenant, _ = acme
    with owner_engine.begin() as conn:
        conn.execute(sa.update(Tenant).where(Tenant.id == tenant.id).values(time_zone="Asia/Shanghai"))
    _create(admin, "Standard")
    schedule_id = _schedule_id(owner_engine, "Standard")
    _add_version(admin, schedule_id, CARD)
    page = _add_version(
        admin, schedule_id, {**CARD, "percent": "2.5"}, effective_from="2099-01-01T09:00", follow_redirects=True
    )
    html = body(page)
    assert "Payments from 2099-01-01 09:00 (Asia/Shanghai) use the new fees" in html
    versions = _versions(owner_engine)
    assert [v.number for v in versions] == [1, 2]
    assert versions[1].effective_from == datetime(2099, 1, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    # Version 1 stays in force until then; the new one is listed as scheduled.
    assert "Version 1, in force since" in html and "2.9% + 0.30 USD" in html
    assert re.search(r"<td>2</td>\s*<td>2099-01-01 09:00 \(Asia/Shanghai\)</td>\s*<td>scheduled</td>", html)
    assert "Version 2 from 2099-01-01 09:00 (Asia/Shanghai)" in body(admin.get("/console/fees"))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"percent": "abc"}, "percent", "&#39;abc&#39; is not a percentage; write it like 2.9."),
        ({"percent": "150"}, "percent", "A percentage must be at least 0 and below 100."),
        ({"minimum": "5.00", "maximum": "1.00"}, "minimum", "The minimum fee is above the maximum."),
        ({"fixed": "0.305"}, "fixed", "USD amounts have at most 2 decimals."),
        ({"currency": "XYZ"}, "currency", "is not an ISO 4217 currency code"),
        ({"volume_from": "0"}, "volume_from", "Two rules for card in USD from the same monthly volume."),
    ],
)
def test_a_bad_rule_is_explained_at_its_row_and_field(admin, owner_engine, change, field, message):
    _create(admin, "Standard")
    schedule_id = _schedule_id(owner_engine, "Standard")
    # Row 0 is fine, row 1 is blank, row 2 is wrong: the message is at row 2 (the third rule typed).
    bad = {**CARD, "volume_from": "500", **change}
    response = _add_version(admin, schedule_id, CARD, None, bad, note="Try")
    html = body(response)
    assert response.status_code == 422
    row = _row_html(html, 2)
    error = re.search(rf'<p id="rules-2-{field}-error" class="error">([^<]*)</p>', row)
    assert error and message in error.group(1), row
    assert 'aria-invalid="true"' in row
    # No other row shows an error, and everything typed is still there.
    assert 'class="error"' not in _row_html(html, 0) + _row_html(html, 1)
    assert '<option selected value="card">' in row
    for name in ("currency", "percent", "fixed", "minimum", "maximum", "volume_from"):
        assert re.search(rf'name="rules-2-{name}" [^>]*value="{re.escape(bad.get(name, ""))}"', row), name
    assert 'value="2.9"' in _row_html(html, 0) and 'value="Try"' in html
    assert _versions(owner_engine) == []
    assert "fee_schedule.version_added" not in _actions(owner_engine)


def test_a_row_without_a_product_and_a_form_without_rules_are_refused(admin, owner_engine):
    _create(admin, "Standard")
    schedule_id = _schedule_id(owner_engine, "Standard")
    response = _add_version(admin, schedule_id, {**CARD, "product": ""})
    assert response.status_code == 422
    assert "Choose the product this rule charges." in _row_html(body(response), 0)
    empty = _add_version(admin, schedule_id)
    assert empty.status_code == 422
    assert "Add at least one rule: a product, a currency and its fee." in body(empty)
    assert _versions(owner_engine) == []


def test_a_version_in_the_past_is_refused(admin, owner_engine):
    _create(admin, "Standard")
    schedule_id = _schedule_id(owner_engine, "Standard")
    response = _add_version(admin, schedule_id, CARD, effective_from="2020-01-01T00:00")
    html = body(response)
    assert response.status_code == 422
    assert 'id="effective_from-error" class="error">A new version cannot start in the past' in html
    assert 'type="datetime-local" value="2020-01-01T00:00"' in html
    assert 'value="2.9"' in _row_html(html, 0)
    garbled = _add_version(admin, schedule_id, CARD, effective_from="next tuesday")
    assert garbled.status_code == 422
    assert "is not a date and time" in body(garbled)
    assert _versions(owner_engine) == []


# --- the default and a merchant's schedule --------------------------------------------------


def test_make_default_and_assign_a_merchant_and_back(admin, acme, owner_engine):
    _, merchant = acme
    _create(admin, "Standard")
    _create(admin, "Premium")
    premium = _schedule_id(owner_engine, "Premium")
    standard = _schedule_id(owner_engine, "Standard")

    page = admin.submit(f"/console/fees/{premium}/default", form_page=f"/console/fees/{premium}", follow_redirects=True)
    assert "Premium is the default now." in body(page)
    assert {n: r.is_default for n, r in _schedules(owner_engine).items()} == {"Standard": False, "Premium": True}
    assert 'id="make-default"' not in body(page)  # it is the default already

    merchant_page = f"/console/merchants/{merchant}"
    assert "Charged by" in body(admin.get(merchant_page)) and "Premium</a> (the tenant default)" in body(
        admin.get(merchant_page)
    )
    page = admin.submit(
        f"{merchant_page}/fee-schedule", {"schedule_id": str(standard)}, form_page=merchant_page, follow_redirects=True
    )
    html = body(page)
    assert "Coffee is on Standard. The next payment uses the new fees." in html
    assert "Standard</a> (assigned)" in html
    assert [(a.merchant_id, a.schedule_id) for a in _assignments(owner_engine)] == [(merchant, standard)]
    listing = body(admin.get("/console/fees"))
    assert re.search(r"Standard</a></td>.*?<td>1 assigned</td>", listing, re.S)
    assert re.search(r"Premium</a>.*?<td>0 assigned<br><small class=\"hint\">and 0 without", listing, re.S)

    page = admin.submit(
        f"{merchant_page}/fee-schedule", {"schedule_id": ""}, form_page=merchant_page, follow_redirects=True
    )
    html = body(page)
    assert "Coffee is on the tenant default (Premium). The next payment uses the new fees." in html
    assert "Premium</a> (the tenant default)" in html
    assert _assignments(owner_engine) == []

    audit = body(admin.get("/console/audit"))
    assert "fee_schedule.default_set" in audit
    assert audit.count("merchant.fee_schedule_assigned") == 2
    assert "tenant default → Standard" in audit and "Standard → tenant default" in audit


def test_a_schedule_of_another_tenant_cannot_be_assigned(admin, acme, make, site, owner_engine):
    _, merchant = acme
    other = make.tenant("other")
    other_admin = _signed_in(site, other, other.admin_email)
    _create(other_admin, "Theirs")
    theirs = _schedule_id(owner_engine, "Theirs")
    merchant_page = f"/console/merchants/{merchant}"
    page = admin.submit(
        f"{merchant_page}/fee-schedule", {"schedule_id": str(theirs)}, form_page=merchant_page, follow_redirects=True
    )
    assert "The fee schedule is unchanged: Not a valid choice." in body(page)
    assert _assignments(owner_engine) == []
    # Nor opened or made the default from this tenant's console.
    assert admin.get(f"/console/fees/{theirs}").status_code == 404
    assert admin.submit(f"/console/fees/{theirs}/default", form_page="/console/fees").status_code == 404


# --- who may do what -----------------------------------------------------------------------


def test_operator_reads_but_cannot_change(admin, acme, site, owner_engine):
    tenant, merchant = acme
    _create(admin, "Standard")
    _create(admin, "Premium")
    standard = _schedule_id(owner_engine, "Standard")
    premium = _schedule_id(owner_engine, "Premium")
    _add_version(admin, standard, CARD)
    before = (_schedules(owner_engine), _versions(owner_engine), _assignments(owner_engine))

    operator = _signed_in(site, tenant, OPERATOR)
    listing = operator.get("/console/fees")
    assert listing.status_code == 200
    assert "Standard" in body(listing) and 'href="/console/fees"' in body(listing)  # the nav link
    assert "Add a schedule" not in body(listing)
    page = operator.get(f"/console/fees/{standard}")
    assert page.status_code == 200
    assert "2.9% + 0.30 USD" in body(page) and "3.20 USD on 100.00 USD" in body(page)
    assert "Add a version" not in body(page) and 'id="make-default"' not in body(page)
    merchant_page = operator.get(f"/console/merchants/{merchant}")
    assert "Standard</a> (the tenant default)" in body(merchant_page)
    assert 'id="fee-schedule-form"' not in body(merchant_page)

    for path, data in [
        ("/console/fees", {"name": "Sneaky"}),
        (f"/console/fees/{standard}/versions", _rows({**CARD, "percent": "9"})),
        (f"/console/fees/{premium}/default", {}),
        (f"/console/merchants/{merchant}/fee-schedule", {"schedule_id": str(premium)}),
    ]:
        response = operator.submit(path, data, form_page="/console/fees")
        assert response.status_code == 403, path
        assert FORBIDDEN in body(response)
    assert (_schedules(owner_engine), _versions(owner_engine), _assignments(owner_engine)) == before


@pytest.mark.parametrize("who", ["finance", "merchant owner"])
def test_finance_and_merchant_users_cannot_open_the_fee_pages(admin, acme, site, owner_engine, who):
    tenant, merchant = acme
    _create(admin, "Standard")
    standard = _schedule_id(owner_engine, "Standard")
    client = _signed_in(site, tenant, FINANCE if who == "finance" else OWNER)
    for path in ("/console/fees", f"/console/fees/{standard}"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert FORBIDDEN in body(response)
    home = "/console/" if who == "finance" else "/merchant/"
    response = client.submit(f"/console/merchants/{merchant}/fee-schedule", {"schedule_id": ""}, form_page=home)
    assert response.status_code == 403
    assert 'href="/console/fees"' not in body(client.get(home))


def test_anonymous_visitors_are_sent_to_sign_in(acme, site, owner_engine):
    tenant, _ = acme
    response = site(tenant.host).get("/console/fees")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


# --- the platform fee ----------------------------------------------------------------------


@pytest.fixture
def platform(make, site):
    make.platform_admin()
    client = site("localhost")
    assert client.login("root@platform.example.com").status_code == 302
    return client


def _platform_fees(owner_engine) -> list[sa.Row]:
    with owner_engine.connect() as conn:
        return conn.execute(sa.select(PlatformFee.__table__).order_by(PlatformFee.created_at)).all()


def test_platform_admin_sets_a_platform_fee(platform, acme, owner_engine):
    tenant, _ = acme
    path = f"/platform/tenants/{tenant.id}"
    assert "No platform fee" in body(platform.get(path))
    page = platform.submit(f"{path}/platform-fee", {"percent": "0.5"}, form_page=path, follow_redirects=True)
    html = body(page)
    assert "The platform fee of Acme Payments is 0.5% from now on." in html
    assert re.search(r'id="platform-fee">0\.5% of every captured amount, since', html)
    [fee] = _platform_fees(owner_engine)
    assert (fee.tenant_id, fee.percent, fee.created_by) == (tenant.id, Decimal("0.5"), "root@platform.example.com")
    assert "tenant.platform_fee_set" in _actions(owner_engine)

    platform.submit(f"{path}/platform-fee", {"percent": "0.75"}, form_page=path)
    html = body(platform.get(path))
    assert re.search(r'id="platform-fee">0\.75% of every captured amount', html)
    history = re.search(r'id="platform-fee-history">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r"<td>([0-9.]+)%</td>", history) == ["0.75", "0.5"]
    assert "in force" in history and "replaced" in history


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "is not a percentage; write it like 2.9."),
        ("100", "A percentage must be at least 0 and below 100."),
        ("-1", "A percentage must be at least 0 and below 100."),
        ("", "Give the percentage, e.g. 0.5 (0 for no platform fee)."),
    ],
)
def test_a_bad_platform_fee_is_refused_and_changes_nothing(platform, acme, owner_engine, value, message):
    tenant, _ = acme
    path = f"/platform/tenants/{tenant.id}"
    platform.submit(f"{path}/platform-fee", {"percent": "0.5"}, form_page=path)
    response = platform.submit(f"{path}/platform-fee", {"percent": value}, form_page=path)
    html = body(response)
    assert response.status_code == 422
    assert re.search(r'id="percent-error" class="error">[^<]*' + re.escape(message), html)
    assert re.search(rf'<input [^>]*name="percent" [^>]*value="{re.escape(value)}">', html)
    assert re.search(r'id="platform-fee">0\.5% of every captured amount', html)
    assert [fee.percent for fee in _platform_fees(owner_engine)] == [Decimal("0.5")]
