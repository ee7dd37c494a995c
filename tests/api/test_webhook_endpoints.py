"""WebhookEndpoints in the merchant API, through Stripe's SDK: the secret once, paging, updates,
deletion, the key's own merchant and mode only, and the audit log naming the API key."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
import stripe

from tenants import api_keys

HOOK_URL = "http://127.0.0.1:9/hooks"  # loopback: allowed because tests run with WEBHOOKS_ALLOW_PRIVATE on


def _create(client, url=HOOK_URL, events=("*",), **extra):
    return client.v1.webhook_endpoints.create({"url": url, "enabled_events": list(events), **extra})


def test_create_shows_the_secret_once_then_retrieve_update_and_delete(stripe_client):
    endpoint = _create(stripe_client, events=["payment_intent.succeeded", "refund.created"], description="Orders")
    assert isinstance(endpoint, stripe.WebhookEndpoint)
    assert endpoint.id.startswith("we_") and endpoint.secret.startswith("whsec_")
    assert (endpoint.url, endpoint.status, endpoint.livemode) == (HOOK_URL, "enabled", False)
    assert endpoint.enabled_events == ["payment_intent.succeeded", "refund.created"]
    assert endpoint.description == "Orders" and endpoint.metadata.to_dict() == {}

    again = stripe_client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert "secret" not in again and again.url == HOOK_URL and again.created == endpoint.created

    changed = stripe_client.v1.webhook_endpoints.update(
        endpoint.id, {"url": "http://127.0.0.1:9/v2", "enabled_events": ["*"], "description": ""}
    )
    assert (changed.url, changed.enabled_events, changed.description) == ("http://127.0.0.1:9/v2", ["*"], None)
    assert "secret" not in changed
    assert stripe_client.v1.webhook_endpoints.update(endpoint.id, {"disabled": True}).status == "disabled"
    enabled = stripe_client.v1.webhook_endpoints.update(endpoint.id, {"disabled": False})
    assert enabled.status == "enabled" and enabled.url == "http://127.0.0.1:9/v2"

    deleted = stripe_client.v1.webhook_endpoints.delete(endpoint.id)
    assert deleted.to_dict() == {"id": endpoint.id, "object": "webhook_endpoint", "deleted": True}
    with pytest.raises(stripe.InvalidRequestError) as gone:
        stripe_client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert gone.value.http_status == 404 and gone.value.code == "resource_missing"
    assert f"No such webhook_endpoint: '{endpoint.id}'" in gone.value.user_message


def test_the_list_pages_newest_first(stripe_client):
    made = [_create(stripe_client, url=f"http://127.0.0.1:9/{i}").id for i in range(5)]
    newest_first = made[::-1]
    first = stripe_client.v1.webhook_endpoints.list({"limit": 2})
    assert first.url == "/v1/webhook_endpoints" and first.has_more is True
    assert [e.id for e in first.data] == newest_first[:2]
    assert all("secret" not in e for e in first.data)
    second = stripe_client.v1.webhook_endpoints.list({"limit": 2, "starting_after": first.data[-1].id})
    assert [e.id for e in second.data] == newest_first[2:4]
    assert [e.id for e in first.auto_paging_iter()] == newest_first


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"enabled_events": ["*"]}, "url", "parameter_missing"),
        ({"url": HOOK_URL}, "enabled_events", "parameter_missing"),
        ({"url": "ftp://example.com/x", "enabled_events": ["*"]}, "url", "url_invalid"),
        ({"url": HOOK_URL, "enabled_events": ["charge.exploded"]}, "enabled_events", None),
        ({"url": HOOK_URL, "enabled_events": ["*"], "metadata": {"k" * 41: "v"}}, f"metadata[{'k' * 41}]", None),
        ({"url": HOOK_URL, "enabled_events": ["*"], "connect": True}, "connect", "parameter_unknown"),
    ],
)
def test_bad_parameters_are_refused_naming_the_parameter(stripe_client, params, param, code):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.webhook_endpoints.create(params)
    assert refused.value.http_status == 400 and refused.value.param == param and refused.value.code == code
    assert stripe_client.v1.webhook_endpoints.list().data == []


def test_metadata_is_kept_merged_on_update_and_returned_everywhere(stripe_client, http):
    endpoint = _create(stripe_client, metadata={"team": "ops", "env": "staging"})
    assert endpoint.metadata.to_dict() == {"team": "ops", "env": "staging"}
    assert stripe_client.v1.webhook_endpoints.retrieve(endpoint.id).metadata.to_dict() == endpoint.metadata.to_dict()

    # As for PaymentIntents: given keys are set, a key set to "" is removed, the others stay.
    changed = stripe_client.v1.webhook_endpoints.update(endpoint.id, {"metadata": {"env": "", "owner": "ana"}})
    assert changed.metadata.to_dict() == {"team": "ops", "owner": "ana"}
    untouched = stripe_client.v1.webhook_endpoints.update(endpoint.id, {"description": "Orders"})
    assert untouched.metadata.to_dict() == {"team": "ops", "owner": "ana"}
    [listed] = stripe_client.v1.webhook_endpoints.list().data
    assert listed.metadata.to_dict() == {"team": "ops", "owner": "ana"}
    # JSON bodies too; metadata="" removes every key.
    cleared = http.post(f"/v1/webhook_endpoints/{endpoint.id}", json={"metadata": ""})
    assert cleared.status_code == 200 and cleared.json()["metadata"] == {}

    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.webhook_endpoints.update(endpoint.id, {"metadata": {"note": "x" * 501}})
    assert refused.value.param == "metadata[note]"
    too_many = {f"k{i}": "v" for i in range(51)}
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.webhook_endpoints.update(endpoint.id, {"metadata": too_many})
    assert refused.value.param == "metadata"
    assert stripe_client.v1.webhook_endpoints.retrieve(endpoint.id).metadata.to_dict() == {}


def test_the_openapi_document_describes_metadata_on_create_and_update(http):
    paths = http.get("/v1/openapi.json").json()["paths"]
    for path in ("/v1/webhook_endpoints", "/v1/webhook_endpoints/{webhook_endpoint}"):
        form = paths[path]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
        assert "metadata" in form["schema"]["properties"], path
        assert form["encoding"]["metadata"] == {"style": "deepObject", "explode": True}


def test_wallet_movement_events_can_be_chosen(stripe_client):
    wanted = ["topup.created", "topup.succeeded", "transfer.created", "payout.created", "payout.canceled"]
    endpoint = _create(stripe_client, events=wanted)
    assert endpoint.enabled_events == wanted


def test_private_addresses_are_refused_when_the_platform_does_not_allow_them(app, stripe_client, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOKS_ALLOW_PRIVATE", False)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _create(stripe_client)
    assert refused.value.code == "url_invalid" and "public internet" in refused.value.user_message


def test_another_merchant_and_the_other_mode_see_nothing(sdk, stripe_client, other_shop, shop, issue_key):
    endpoint = _create(stripe_client)
    for client in (sdk(other_shop.secret), sdk(issue_key(shop, "live"))):
        assert client.v1.webhook_endpoints.list().data == []
        for call in (
            lambda c: c.v1.webhook_endpoints.retrieve(endpoint.id),
            lambda c: c.v1.webhook_endpoints.update(endpoint.id, {"description": "mine now"}),
            lambda c: c.v1.webhook_endpoints.delete(endpoint.id),
        ):
            with pytest.raises(stripe.InvalidRequestError) as refused:
                call(client)
            assert refused.value.http_status == 404 and refused.value.code == "resource_missing"
    kept = stripe_client.v1.webhook_endpoints.retrieve(endpoint.id)
    assert (kept.description, kept.status) == (None, "enabled")


def test_a_live_key_makes_live_endpoints_and_needs_https(sdk, shop, issue_key, app, monkeypatch):
    live = sdk(issue_key(shop, "live"))
    monkeypatch.setitem(app.config, "WEBHOOKS_ALLOW_PRIVATE", False)
    with pytest.raises(stripe.InvalidRequestError) as plain_http:
        _create(live, url="http://93.184.216.34/hooks")
    assert plain_http.value.code == "url_invalid" and "https" in plain_http.value.user_message
    endpoint = _create(live, url="https://93.184.216.34/hooks")
    assert endpoint.livemode is True and [e.id for e in live.v1.webhook_endpoints.list().data] == [endpoint.id]


def test_the_audit_log_names_the_api_key_and_never_the_secret(app, stripe_client, shop, owner_engine):
    endpoint = _create(stripe_client)
    stripe_client.v1.webhook_endpoints.update(endpoint.id, {"description": "Shop events"})
    stripe_client.v1.webhook_endpoints.delete(endpoint.id)
    with app.app_context():
        key = api_keys.authenticate(shop.tenant_id, shop.secret)
        key_id = key.id
    with owner_engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT action, actor_kind, actor_id, actor_email, changes::text FROM audit_events"
                " WHERE tenant_id = :t AND object_id = :id ORDER BY created_at"
            ),
            {"t": shop.tenant_id, "id": endpoint.id},
        ).all()
    assert [r.action for r in rows] == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.deleted",
    ]
    assert {(r.actor_kind, r.actor_id, r.actor_email) for r in rows} == {("api_key", key_id, None)}
    assert all(endpoint.secret not in r.changes for r in rows)


def test_a_replayed_create_shows_the_same_secret_which_is_stored_encrypted(stripe_client, shop, owner_engine):
    key = str(uuid.uuid4())
    params = {"url": HOOK_URL, "enabled_events": ["*"]}
    first = stripe_client.v1.webhook_endpoints.create(params, {"idempotency_key": key})
    replayed = stripe_client.v1.webhook_endpoints.create(params, {"idempotency_key": key})
    assert (replayed.id, replayed.secret) == (first.id, first.secret)
    assert replayed.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(stripe_client.v1.webhook_endpoints.list().data) == 1
    with owner_engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT response_body::text FROM idempotency_keys WHERE tenant_id = :t AND key = :k"),
            {"t": shop.tenant_id, "k": key},
        ).scalar_one()
    assert first.id in stored and first.secret not in stored
