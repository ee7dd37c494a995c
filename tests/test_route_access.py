"""Every route of the app, asked by every role of every scope: one table says what each one gets.

`ACCESS` below names every registered route (endpoint) with who may use it. A new route missing
from the table fails `test_every_route_is_in_the_table`, naming it.

`test_every_route_answers_each_role_as_the_table_says` signs in once as each of these and asks
every route, with the ids of the signed-in side's own objects (built by `ROUTES` of
tests/test_cross_tenant_routes.py, which also asks each route with another tenant's ids and
expects 404):

- nobody, on a tenant's host and on the platform's host;
- the platform admin (platform host);
- tenant staff: admin, operator, finance (tenant host);
- merchant users: the owner and a staff member of an approved merchant, and the owner of a
  merchant still under KYC review ("applicant") (tenant host);
- the merchant's backend with its secret API key, and its terminal with its device key
  (tenant host, the API only).

What each gets follows from the route's entry: a route of another kind of host is 404; a
dashboard page asked by nobody sends to sign in (302), by a signed-in user without the role is
403 ("Your account is not allowed to open this page."); the API without a key is Stripe's 401, a
terminal outside its few operations 403. A role that may use the route gets `ok` (GET) from a
GET route. Routes that change things (POST, DELETE) are asked by every role that may not use
them (and must be refused before anything changes); what the roles that may do with them is
tested by each feature's own tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from conftest import PASSWORD
from test_cross_tenant_routes import ROUTES, World
from test_cross_tenant_routes import world as world  # noqa: F401  (a fixture)
from werkzeug.routing import RequestRedirect

FORBIDDEN = "Your account is not allowed to open this page."

PLATFORM_HOST = "localhost"

# Who asks: (name, host kind)
PRINCIPALS = {
    "nobody": "tenant",
    "nobody@platform": "platform",
    "platform_admin": "platform",
    "admin": "tenant",
    "operator": "tenant",
    "finance": "tenant",
    "owner": "tenant",
    "staff": "tenant",
    "applicant": "tenant",
    "secret_key": "tenant",
    "device_key": "tenant",
}
SESSION_USERS = {"platform_admin", "admin", "operator", "finance", "owner", "staff", "applicant"}


@dataclass(frozen=True)
class Access:
    """Who may use a route.

    `scope`: "platform" (the platform console), "console" (tenant staff), "merchant" (the merchant
    dashboard), "account" (anyone signed in), "api" (the merchant API), "public" (anyone).
    `hosts`: the kinds of host it exists on.
    `roles`: who may open it (GET); `changes`: who may POST or DELETE to it (default: `roles`).
    `ok`: what an allowed GET answers. `overrides`: principal -> what GET answers where the route
    answers otherwise than its scope implies; `refusals`: the same for every method, where the route
    refuses someone its scope would let in (the table says why).
    """

    scope: str
    roles: frozenset[str]
    changes: frozenset[str] | None = None
    ok: int = 200
    hosts: frozenset[str] = frozenset({"tenant"})
    overrides: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)


STAFF = ("admin", "operator", "finance")
MERCHANT_USERS = ("owner", "staff")
BOTH_HOSTS = ("tenant", "platform")
# A signed-in person asking for the sign-in or sign-up page is sent to their own home page.
SIGNED_IN_GO_HOME = dict.fromkeys(sorted(SESSION_USERS), 302)
# A terminal sees only the payments taken at it (and their refunds): the merchant's others are 404.
TERMINAL_SEES_ITS_OWN = {"device_key": 404}


def _merchant_roles(roles) -> frozenset[str]:
    # The applicant is the owner of a merchant under review: an owner as far as roles go.
    return frozenset(roles) | ({"applicant"} if "owner" in roles else set())


def console(*roles: str, changes=None, **kwargs) -> Access:
    return Access("console", frozenset(roles), frozenset(changes) if changes else None, **kwargs)


def merchant(*roles: str, changes=None, **kwargs) -> Access:
    return Access("merchant", _merchant_roles(roles), _merchant_roles(changes) if changes else None, **kwargs)


def platform(**kwargs) -> Access:
    return Access("platform", frozenset({"platform_admin"}), hosts=frozenset({"platform"}), **kwargs)


def public(hosts=("tenant",), **kwargs) -> Access:
    return Access("public", frozenset(PRINCIPALS), hosts=frozenset(hosts), **kwargs)


def account() -> Access:
    """A signed-in person's own account (any scope, any role), on both kinds of host."""
    return Access("account", frozenset(SESSION_USERS), hosts=frozenset(BOTH_HOSTS))


def api(*, terminal: bool = False, **kwargs) -> Access:
    """An operation of the merchant API: its secret key may; a terminal's device key only for `terminal`."""
    return Access("api", frozenset({"secret_key", "device_key"} if terminal else {"secret_key"}), **kwargs)


ACCESS: dict[str, Access] = {
    # --- the tenant's console: tenant staff by role ---
    "console.add_fee_version": console("admin"),
    "console.add_routing_rule": console("admin"),
    "console.adjust_suspense_item": console("admin", "finance"),
    "console.approve_merchant": console("admin"),
    "console.approve_suspense_write_off": console("admin", "finance"),
    "console.assign_fee_schedule": console("admin"),
    "console.assign_suspense_item": console("admin", "finance"),
    "console.audit_log": console("admin"),
    "console.branding_edit": console("admin"),
    "console.branding_logo": console("admin"),
    "console.branding_preferences": console("admin"),
    "console.branding_preview": console("admin"),
    "console.branding_publish": console("admin"),
    "console.channel": console("admin"),
    "console.channels": console("admin", "operator"),
    "console.clearing": console(*STAFF),
    "console.comment_suspense_item": console("admin", "finance"),
    "console.create_export": console(*STAFF),
    "console.create_payout_batches": console("admin", "finance"),
    "console.dashboard": console(*STAFF),
    "console.delete_saved_filter": console(*STAFF),
    "console.download_export": console(*STAFF),
    "console.export": console(*STAFF),
    "console.export_status": console(*STAFF),
    "console.exports": console(*STAFF),
    "console.fee_schedule": console("admin", "operator"),
    "console.fee_schedules": console("admin", "operator", changes=("admin",)),
    "console.fetch_statement": console("admin", "finance"),
    "console.import_payout_results": console("admin", "finance"),
    "console.match_suspense_item": console("admin", "finance"),
    "console.merchant": console(*STAFF),
    "console.merchants": console(*STAFF, changes=("admin", "operator")),  # finance reads merchants
    "console.new_channel": console("admin"),
    "console.onboarding_document": console("admin", "operator"),
    "console.onboarding_queue": console("admin", "operator"),
    "console.onboarding_review": console("admin", "operator"),
    "console.payments": console(*STAFF),
    "console.payout_batch": console(*STAFF),
    "console.payout_batch_csv": console(*STAFF),
    "console.payout_batch_xml": console(*STAFF),
    "console.payout_settings": console(*STAFF, changes=("admin", "finance")),
    "console.payouts": console(*STAFF),
    "console.reconciliation": console(*STAFF),
    "console.reject_merchant": console("admin", "operator"),
    "console.reject_suspense_write_off": console("admin", "finance"),
    "console.remove_routing_rule": console("admin"),
    "console.reports": console(*STAFF),
    "console.request_merchant_changes": console("admin", "operator"),
    "console.request_suspense_write_off": console("admin", "finance"),
    "console.resend_invitation": console("admin"),
    "console.routing": console("admin", "operator"),
    "console.run_settlement": console("admin", "finance"),
    "console.save_filter": console(*STAFF),
    "console.set_default_fee_schedule": console("admin"),
    "console.set_merchant_settlement_terms": console("admin", "finance"),
    "console.set_user_active": console("admin"),
    "console.statement_import": console(*STAFF),
    "console.statement_mappings": console(*STAFF, changes=("admin", "finance")),
    "console.suspense": console(*STAFF),
    "console.suspense_item": console(*STAFF),
    "console.test_route": console("admin", "operator"),
    "console.update_clearing_terms": console("admin", "finance"),
    "console.upload_statement": console("admin", "finance"),
    "console.risk_alerts": console(*STAFF),
    "console.risk_alert": console(*STAFF),
    "console.risk_rules": console(*STAFF),
    "console.create_risk_rule": console("admin"),
    "console.risk_rule": console("admin"),
    "console.update_risk_rule": console("admin"),
    "console.delete_risk_rule": console("admin"),
    "console.risk_review": console("admin", "operator"),
    "console.release_held_payment": console("admin", "operator"),
    "console.refund_held_payment": console("admin", "operator"),
    "console.security": console("admin"),  # whether staff and merchant users must use two-factor sign-in
    "console.user": console("admin"),
    "console.users": console("admin"),
    # --- the merchant dashboard: the merchant's users by role ("owner" includes the applicant) ---
    "merchant.api_keys_list": merchant(*MERCHANT_USERS),
    "merchant.bank_account": merchant(*MERCHANT_USERS, changes=("owner",)),
    "merchant.cancel_payout": merchant("owner"),
    "merchant.charge_item": merchant(*MERCHANT_USERS),
    "merchant.charge_items": merchant(*MERCHANT_USERS),
    "merchant.coupon": merchant(*MERCHANT_USERS),
    "merchant.coupons_list": merchant(*MERCHANT_USERS),
    "merchant.create_api_key": merchant("owner"),
    "merchant.create_export": merchant(*MERCHANT_USERS),
    "merchant.create_webhook": merchant("owner"),
    "merchant.dashboard": merchant(*MERCHANT_USERS),
    "merchant.deactivate_terminal": merchant("owner"),
    "merchant.delete_kyc_document": merchant("owner"),
    "merchant.delete_saved_filter": merchant(*MERCHANT_USERS),
    "merchant.delete_webhook": merchant("owner"),
    "merchant.download_export": merchant(*MERCHANT_USERS),
    "merchant.export": merchant(*MERCHANT_USERS),
    "merchant.export_status": merchant(*MERCHANT_USERS),
    "merchant.exports": merchant(*MERCHANT_USERS),
    "merchant.kyc_document": merchant(*MERCHANT_USERS),
    "merchant.new_charge_item": merchant("owner"),
    "merchant.new_coupon": merchant("owner"),
    "merchant.new_payment_link": merchant("owner"),
    "merchant.onboarding": merchant(*MERCHANT_USERS),
    "merchant.payment": merchant(*MERCHANT_USERS),
    "merchant.payment_link": merchant(*MERCHANT_USERS),
    "merchant.payment_link_qr_png": merchant(*MERCHANT_USERS),
    "merchant.payment_link_qr_svg": merchant(*MERCHANT_USERS),
    "merchant.payment_links": merchant(*MERCHANT_USERS),
    "merchant.payments": merchant(*MERCHANT_USERS),
    "merchant.payouts": merchant(*MERCHANT_USERS, changes=("owner",)),  # staff see, the owner asks
    "merchant.refund_payment": merchant("owner"),
    "merchant.refunds_list": merchant(*MERCHANT_USERS),
    "merchant.register_terminal": merchant("owner"),
    "merchant.reports": merchant(*MERCHANT_USERS),
    "merchant.resend_webhook_delivery": merchant("owner"),
    "merchant.revoke_api_key": merchant("owner"),
    "merchant.roll_api_key": merchant("owner"),
    "merchant.rotate_terminal_key": merchant("owner"),
    "merchant.save_filter": merchant(*MERCHANT_USERS),
    "merchant.save_profile": merchant("owner"),
    "merchant.set_charge_item_active": merchant("owner"),
    "merchant.set_coupon_active": merchant("owner"),
    "merchant.set_payment_link_active": merchant("owner"),
    "merchant.set_webhook_status": merchant("owner"),
    "merchant.settings": merchant("owner"),  # which sites may frame the checkout
    "merchant.settlement": merchant(*MERCHANT_USERS),
    "merchant.settlement_csv": merchant(*MERCHANT_USERS),
    "merchant.settlement_pdf": merchant(*MERCHANT_USERS),
    "merchant.settlements": merchant(*MERCHANT_USERS),
    "merchant.submit_onboarding": merchant("owner"),
    "merchant.team": merchant("owner"),
    "merchant.terminals_list": merchant(*MERCHANT_USERS),
    "merchant.update_charge_item": merchant("owner"),
    "merchant.update_coupon": merchant("owner"),
    "merchant.update_webhook": merchant("owner"),
    "merchant.upload_document": merchant("owner"),
    "merchant.webhook": merchant(*MERCHANT_USERS),
    "merchant.webhooks_list": merchant(*MERCHANT_USERS),
    # --- the merchant API: the merchant's backend with its secret key; a terminal's device key ---
    "api.openapi": public(),  # the API's description: no key needed
    "api.create_payment_intent": api(terminal=True),
    "api.retrieve_payment_intent": api(terminal=True, refusals=TERMINAL_SEES_ITS_OWN),
    "api.update_payment_intent": api(),
    "api.confirm_payment_intent": api(terminal=True),
    "api.capture_payment_intent": api(),
    "api.cancel_payment_intent": api(),
    "api.list_payment_intents": api(),
    "api.create_refund": api(terminal=True),
    "api.retrieve_refund": api(terminal=True, refusals=TERMINAL_SEES_ITS_OWN),
    "api.list_refunds": api(),
    "api.retrieve_balance": api(),
    "api.list_balance_transactions": api(),
    "api.retrieve_balance_transaction": api(),
    "api.create_topup": api(),
    "api.retrieve_topup": api(),
    "api.list_topups": api(),
    "api.create_transfer": api(),
    "api.retrieve_transfer": api(),
    "api.list_transfers": api(),
    "api.create_payout": api(),
    "api.retrieve_payout": api(),
    "api.cancel_payout": api(),
    "api.list_payouts": api(),
    "api.list_events": api(),
    "api.retrieve_event": api(),
    "api.create_webhook_endpoint": api(),
    "api.retrieve_webhook_endpoint": api(),
    "api.update_webhook_endpoint": api(),
    "api.delete_webhook_endpoint": api(),
    "api.list_webhook_endpoints": api(),
    # --- the platform console: platform admins, on the platform's host ---
    "platform.tenants": platform(),
    "platform.new_tenant": platform(),
    "platform.tenant": platform(),
    "platform.set_status": platform(),
    "platform.set_platform_fee": platform(),
    "platform.resend_invitation": platform(),
    "platform.audit_log": platform(),
    "platform.create_export": platform(),
    "platform.health": platform(),
    "platform.risk": platform(),  # risk alerts of every tenant
    # The jobs dashboard (rq-dashboard); "requeue all" answers GET with 405 (the app takes it only by POST).
    **{
        f"rq_dashboard.{name}": platform()
        for name in (
            "favicon",
            "static",
            "queues_overview",
            "workers_overview",
            "jobs_overview",
            "list_queues",
            "list_jobs",
            "list_workers",
            "delete_job_view",
            "requeue_job_view",
            "empty_queue",
            "compact_queue",
        )
    },
    "rq_dashboard.requeue_all": platform(ok=405),
    # A job id Redis does not have (finished jobs expire) is no page.
    "rq_dashboard.job_view": platform(ok=404),
    "rq_dashboard.job_info": platform(ok=404),
    # --- signing in, links sent by e-mail, signing up ---
    "auth.index": public(BOTH_HOSTS, ok=302),  # to the sign-in page or one's home page
    "auth.login": public(BOTH_HOSTS, overrides=SIGNED_IN_GO_HOME),
    "auth.logout": public(BOTH_HOSTS),
    "auth.forgot_password": public(BOTH_HOSTS),
    # The link's token is the tenant's: on the platform's host it is no valid link.
    "auth.reset_password": public(BOTH_HOSTS, refusals={"nobody@platform": 400, "platform_admin": 400}),
    "auth.accept_invitation": public(BOTH_HOSTS, refusals={"nobody@platform": 400, "platform_admin": 400}),
    "auth.signup": public(overrides={u: 302 for u in SESSION_USERS - {"platform_admin"}}),
    "auth.signup_sent": public(),
    "auth.verify_signup": public(),
    "i18n.switch_language": public(BOTH_HOSTS),
    # The second step of signing in: without a password step just passed, back to the sign-in page.
    "auth.two_factor_code": public(BOTH_HOSTS, ok=302),
    "auth.two_factor_enrol": public(BOTH_HOSTS, ok=302),
    # One's own two-factor settings.
    "auth.two_factor_page": account(),
    "auth.two_factor_enable": account(),
    "auth.two_factor_disable": account(),
    "auth.two_factor_recovery_codes": account(),
    # --- payers, channels, shared files ---
    "checkout.page": public(),
    "checkout.pay": public(),
    "checkout.status": public(),
    "paylinks.page": public(),
    "notifications.receive": public(),  # a payment channel's signed notification
    "brand_logo": public(),
    "theme_static": public(BOTH_HOSTS),
    # Prometheus metrics: on the platform's host, to a loopback client (the test's) or one with the
    # PAYPLAT_METRICS_TOKEN bearer token (tests/test_metrics.py).
    "metrics": public(("platform",)),
    "static": public(BOTH_HOSTS, ok=404),  # the portal has no static folder of its own: themes carry the files
}

# URL values of routes that `ROUTES` (tests/test_cross_tenant_routes.py) does not build: they name no
# tenant's object.
VALUES = {
    "static": {"filename": "site.css"},
    "theme_static": {"theme": "default", "filename": "theme.css"},
    "rq_dashboard.static": {"filename": "css/bootstrap.min.css"},
}
RQ_VALUES = {
    "instance_number": 0,
    "queue_name": "channels",
    "registry_name": "queued",
    "per_page": 8,
    "order": "asc",
    "page": 1,
    "job_id": "no-such-job",
}

# Whose objects a route's URL names (`ROUTES[endpoint].who`), and which merchant users belong to
# another merchant of the same tenant, for whom those ids are someone else's (404).
OTHER_MERCHANTS = {"merchant": {"applicant"}, "applicant": {"owner", "staff"}}
CHANGES = ("POST", "DELETE")


def test_every_route_is_in_the_table(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    missing = sorted(endpoints - set(ACCESS))
    assert not missing, (
        f"routes missing from ACCESS in tests/test_route_access.py: {missing}; add each with who may use it"
    )
    stale = sorted(set(ACCESS) - endpoints)
    assert not stale, f"ACCESS names routes that no longer exist: {stale}"


def expected(endpoint: str, principal: str, method: str, alias: bool = False) -> int | None:
    """What `principal` gets from `endpoint` by `method`; None: allowed to change something (not asked here).

    `alias`: the URL is one of the route's other spellings, which routing answers for everyone with a
    redirect (308) to the route's own URL, asked as well."""
    if alias:
        return 308
    access = ACCESS[endpoint]
    if PRINCIPALS[principal] not in access.hosts:
        return 404
    if principal in access.refusals:
        return access.refusals[principal]
    if method == "GET" and principal in access.overrides:
        return access.overrides[principal]
    allowed = access.roles if method == "GET" else (access.changes or access.roles)
    if principal in allowed:
        route = ROUTES.get(endpoint)
        if access.scope == "merchant" and route is not None and principal in OTHER_MERCHANTS.get(route.who, ()):
            return 404
        return access.ok if method == "GET" else None
    if access.scope == "api":
        return 403 if principal == "device_key" else 401
    return 403 if principal in SESSION_USERS else 302


class Asker:
    """One principal: a client on its host, the headers it sends, a CSRF token of its session."""

    def __init__(self, site, host: str, email: str | None = None, key: str | None = None, home: str = "/login"):
        self.client = site(host)
        if email:
            assert self.client.login(email, PASSWORD).status_code == 302, f"{email} could not sign in on {host}"
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.token = self.client.csrf_token(home)

    def ask(self, method: str, url: str, data: dict, api: bool):
        if method == "GET":
            response = self.client.get(url, headers=self.headers)
        elif method == "DELETE":
            response = self.client.client.delete(url, base_url=self.client.base_url, headers=self.headers)
        else:
            form = dict(data) if api else {**data, "csrf_token": self.token}
            response = self.client.post(url, data=form, headers=self.headers)
        response.get_data()
        response.close()
        return response


def _askers(site, make, world: World) -> dict[str, Asker]:
    a = world.a
    operator, finance, staff = (f"{role}@alpha-people.example.com" for role in ("operator", "finance", "staff"))
    make.user(a, operator, "operator")
    make.user(a, finance, "finance")
    make.user(a, staff, "staff", merchant_id=a.merchant)
    return {
        "nobody": Asker(site, a.host),
        "nobody@platform": Asker(site, PLATFORM_HOST),
        "platform_admin": Asker(site, PLATFORM_HOST, world.platform_admin, home="/platform/"),
        "admin": Asker(site, a.host, a.admin_email, home="/console/"),
        "operator": Asker(site, a.host, operator, home="/console/"),
        "finance": Asker(site, a.host, finance, home="/console/"),
        "owner": Asker(site, a.host, a.owner_email, home="/merchant/"),
        "staff": Asker(site, a.host, staff, home="/merchant/"),
        "applicant": Asker(site, a.host, a.applicant_email, home="/merchant/"),
        "secret_key": Asker(site, a.host, key=a.api_secret),
        "device_key": Asker(site, a.host, key=a.terminal_key),
    }


def _requests(app, world: World):
    """(endpoint, method, url, form data, alias) for every rule of the app, with A's own ids."""
    routing = app.url_map.bind(world.a.host)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.endpoint, r.rule)):
        route = ROUTES.get(rule.endpoint)
        if route is not None:
            values = route.own(world)
        else:
            values = {name: {**RQ_VALUES, **VALUES.get(rule.endpoint, {})}[name] for name in rule.arguments}
        url = rule.build(values, append_unknown=False)[1]
        if route is not None and route.query is not None:
            url = f"{url}?{urlencode(route.query(world.a))}"
        data = (route.data(world.a) if callable(route.data) else route.data) if route is not None else {}
        for method in ("GET", "POST", "DELETE"):
            if method in rule.methods:
                try:
                    routing.match(url.split("?")[0], method=method)
                    alias = False
                except RequestRedirect:
                    alias = True
                yield rule.endpoint, method, url, data, alias


def test_every_route_answers_each_role_as_the_table_says(app, site, make, world):
    askers = _askers(site, make, world)
    requests = sorted(_requests(app, world), key=lambda r: r[1] != "GET")  # look before changing anything
    wrong = []
    asked = 0
    for endpoint, method, url, data, alias in requests:
        for principal, asker in askers.items():
            want = expected(endpoint, principal, method, alias)
            if want is None:
                continue
            response = asker.ask(method, url, data, api=ACCESS[endpoint].scope == "api")
            asked += 1
            text = response.get_data().decode(errors="replace")
            if response.status_code != want:
                wrong.append(f"{method} {url} as {principal}: {response.status_code}, the table says {want}")
            elif want == 403 and ACCESS[endpoint].scope != "api" and FORBIDDEN not in text:
                wrong.append(f"{method} {url} as {principal}: a 403 without the refusal's message")
            elif want == 302 and ACCESS[endpoint].scope != "public" and not alias:
                location = urlsplit(response.headers["Location"])
                if location.path != "/login":
                    wrong.append(f"{method} {url} as {principal}: sent to {location.path}, not to sign in")
    assert not wrong, f"{len(wrong)} of {asked} answers differ from ACCESS:\n" + "\n".join(wrong)
    assert asked > 1500
