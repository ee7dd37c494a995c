"""Every route that takes an id refuses another tenant's id.

`ROUTES` below lists every URL rule with a variable. A new route with an id that is not in the
table fails `test_every_route_with_a_variable_is_in_the_table`, naming it: add it to the table
with how to build its URL from the signed-in side's own objects and from another tenant's (and,
when its form names another object, the form data built from the side whose ids are in the URL).

For each route: A's admin (or, for the merchant dashboard, A's merchant owner; for the merchant
API at /v1, A's merchant's secret key; for channel notifications, a channel with a signed body), on
A's host, requests the URL built with B's ids and gets
404 (or the refusal named in the table); B's data is unchanged and nobody at B got an e-mail. As
controls, the same route with A's own ids is not refused, and B's ids on B's host, by B's admin
(B's merchant owner, B's key), are not refused either (so B's ids are real and the 404 means
something).
"""

from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from conftest import PASSWORD
from PIL import Image

from billing import catalog, coupons, schedules
from billing.fees import FeeRule
from clearing import exports, listings, payouts, reconciliation, saved_filters, settlement, suspense
from clearing.models import ClearingRun, Settlement, StatementLine, SuspenseItem
from clearing.statement_formats import ColumnMapping
from core.db import db
from onboarding import documents, review
from onboarding import profile as profiles
from onboarding import signup as signups
from payments import balance_operations, channel_accounts, intents, links, refunds, terminals, webhooks
from payments.channels.base import Secret, sign_payload
from payments.channels.sandbox import SIGNATURE_HEADER
from payments.models import BalanceTransaction, Event
from risk import rules as risk_rules
from risk.models import RiskAlert
from tenants import api_keys, branding, tokens
from tenants.audit import Actor
from tenants.isolation import tenant_context
from tenants.models import User

NEW_PASSWORD = "a-brand-new-password-42"
CHANNEL_WEBHOOK_SECRET = "whsec_x"  # of both sides' sandbox account `channel`


@dataclass
class Side:
    """One tenant and the ids of its objects."""

    id: uuid.UUID
    host: str
    admin_email: str
    admin: uuid.UUID
    pending: uuid.UUID  # invited staff, no password yet
    pending_email: str
    merchant: uuid.UUID
    owner: uuid.UUID
    logo: str
    reset_token: str  # a password-reset link of the admin
    invitation_token: str  # the invitation link of `pending`
    channel: uuid.UUID  # a channel account
    rule: uuid.UUID  # a routing rule of `merchant` on `channel`
    api_key: uuid.UUID  # a test-mode API key of `merchant`, created by its owner
    terminal: str  # an active test-mode terminal of `merchant`
    terminal_key: str  # its device key: what the terminal calls the API with
    payment: str  # a succeeded PaymentIntent of `merchant`
    owner_email: str  # `owner`'s e-mail: signs in to the merchant dashboard
    api_secret: str  # the secret of `api_key`: the merchant's backend calls the API with it
    unconfirmed: str  # a PaymentIntent of `merchant` awaiting confirmation (pm_card_visa)
    unconfirmed_secret: str  # its client secret: what the payer's checkout link carries
    held: str  # an authorised PaymentIntent of `merchant` (capture_method=manual)
    refund: str  # a partial refund of `payment`
    event: str  # the payment_intent.succeeded event of `payment`
    webhook: str  # a webhook endpoint of `merchant` (test mode, all events)
    delivery: uuid.UUID  # a delivery of one of `merchant`'s events to `webhook`
    topup: str  # a test-mode top-up of `merchant`
    transfer: str  # a transfer from `merchant` to a second merchant of the same tenant
    payout: str  # a pending payout of `merchant`
    balance_transaction: str  # the balance transaction of `topup`
    fee_schedule: uuid.UUID  # a fee schedule with one version, not the default; `merchant` is assigned to it
    settlement: uuid.UUID  # a settlement of `merchant`: a back-dated payment, settled
    payout_batch: uuid.UUID  # a bank batch (EUR) with a payout of `merchant`, which has a bank account
    statement_import: uuid.UUID  # a CSV statement of `channel`, imported: `payment` matched, two lines unknown
    suspense_item: uuid.UUID  # an open suspense item of that statement (a line on the statement only)
    late_payment: str  # a 7.00 payment made after the import: what `suspense_item` can be matched to
    write_off: uuid.UUID  # another one, its write-off requested by `pending` (so the admin may approve it)
    merchant_export: uuid.UUID  # a finished export of `merchant`'s payments (its owner asked)
    console_export: uuid.UUID  # a finished export of the tenant's payments (the admin asked)
    merchant_filter: uuid.UUID  # a saved filter of `merchant`'s payments page
    console_filter: uuid.UUID  # a saved filter of the console's reports page
    charge_item: uuid.UUID  # a charge item of `merchant`
    coupon: uuid.UUID  # a coupon of `merchant`
    payment_link: str  # a test-mode payment link of `merchant`, of `charge_item`
    applicant: uuid.UUID  # a merchant that signed up, filled its profile, uploaded documents and submitted them
    applicant_email: str  # its owner (signs in with the test password)
    kyc_document: uuid.UUID  # one of its documents
    signup_token: str  # the e-mail verification link of a sign-up not yet verified
    risk_rule: uuid.UUID  # a risk rule: hold single payments of 900.00 or more
    risk_held: str  # a payment of `merchant` that rule held for review
    risk_alert: uuid.UUID  # the alert it raised


@dataclass
class World:
    a: Side
    b: Side
    platform_admin: str


@dataclass(frozen=True)
class Route:
    """How to call one route: as whom, with which method and form data, and with which ids.

    `own(world)`: URL values naming objects of the signed-in side (tenant A, or any real tenant
    for the platform console). `foreign(world)`: a list of URL values that must be refused.
    `data`: the form posted, or a function of the side whose ids are in the URL that builds it
    (for a form that names another object of that side).
    """

    # "tenant" (A's admin on A's host) | "merchant" (A's merchant owner on A's host)
    # | "applicant" (the owner of A's merchant under KYC review, on A's host)
    # | "api" (A's merchant's secret key on A's host) | "platform" (platform admin on the platform host)
    # | "channel" (a payment channel, signed in as nobody, POSTing a signed notification on A's host)
    # | "payer" (nobody signed in, on A's host: a payer with a checkout or payment link)
    who: str
    method: str  # GET | POST | DELETE (DELETE: the API only)
    own: Callable[[World], dict]
    foreign: Callable[[World], list[dict]]
    data: dict | Callable[[Side], dict] = field(default_factory=dict)
    refused: int = 404
    refused_text: str = "Page not found"
    # The query string, built from the side whose ids are in the URL (a checkout link's client secret).
    query: Callable[[Side], dict] | None = None


API_REFUSAL = {"refused": 404, "refused_text": '"code": "resource_missing"'}

ROUTES: dict[str, Route] = {
    # A logo file name of tenant B asked for on A's host.
    "brand_logo": Route("tenant", "GET", lambda w: {"name": w.a.logo}, lambda w: [{"name": w.b.logo}]),
    # Links carry a signed token, not a bare id: another tenant's token is an invalid link (400)
    # and never changes B's account (the POST carries a new password).
    "auth.reset_password": Route(
        "tenant",
        "POST",
        lambda w: {"token": w.a.reset_token},
        lambda w: [{"token": w.b.reset_token}],
        data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        refused=400,
        refused_text="This link has already been used or is no longer valid.",
    ),
    "auth.accept_invitation": Route(
        "tenant",
        "POST",
        lambda w: {"token": w.a.invitation_token},
        lambda w: [{"token": w.b.invitation_token}],
        data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
        refused=400,
        refused_text="This link has already been used or is no longer valid.",
    ),
    "console.user": Route(
        "tenant",
        "GET",
        lambda w: {"user_id": w.a.pending},
        lambda w: [{"user_id": w.b.admin}, {"user_id": w.b.owner}, {"user_id": w.b.pending}],
    ),
    "console.resend_invitation": Route(
        "tenant",
        "POST",
        lambda w: {"user_id": w.a.pending},
        lambda w: [{"user_id": w.b.pending}],
    ),
    "console.set_user_active": Route(
        "tenant",
        "POST",
        lambda w: {"user_id": w.a.pending},
        lambda w: [{"user_id": w.b.admin}, {"user_id": w.b.owner}],
        data={"active": "0"},
    ),
    "console.merchant": Route(
        "tenant", "GET", lambda w: {"merchant_id": w.a.merchant}, lambda w: [{"merchant_id": w.b.merchant}]
    ),
    "console.channel": Route(
        "tenant", "GET", lambda w: {"account_id": w.a.channel}, lambda w: [{"account_id": w.b.channel}]
    ),
    "console.remove_routing_rule": Route(
        "tenant", "POST", lambda w: {"rule_id": w.a.rule}, lambda w: [{"rule_id": w.b.rule}]
    ),
    "console.fee_schedule": Route(
        "tenant", "GET", lambda w: {"schedule_id": w.a.fee_schedule}, lambda w: [{"schedule_id": w.b.fee_schedule}]
    ),
    "console.add_fee_version": Route(
        "tenant",
        "POST",
        lambda w: {"schedule_id": w.a.fee_schedule},
        lambda w: [{"schedule_id": w.b.fee_schedule}],
        data={"rules-0-product": "card", "rules-0-currency": "USD", "rules-0-percent": "9.5"},
    ),
    # B's schedule is not B's default: made the default through A's host, B's defaults would change.
    "console.set_default_fee_schedule": Route(
        "tenant", "POST", lambda w: {"schedule_id": w.a.fee_schedule}, lambda w: [{"schedule_id": w.b.fee_schedule}]
    ),
    # B's merchant is on B's schedule: put back on the default through A's host, its assignment would go.
    "console.assign_fee_schedule": Route(
        "tenant",
        "POST",
        lambda w: {"merchant_id": w.a.merchant},
        lambda w: [{"merchant_id": w.b.merchant}],
        data={"schedule_id": ""},
    ),
    # B's merchant follows B's default T+N: given its own through A's host, B's terms would change.
    "console.set_merchant_settlement_terms": Route(
        "tenant",
        "POST",
        lambda w: {"merchant_id": w.a.merchant},
        lambda w: [{"merchant_id": w.b.merchant}],
        data={"delay_days": "7"},
    ),
    # A sign-up's verification link is signed, not a bare id: on another tenant's host it names no sign-up (400),
    # and verifying it there would create a merchant there.
    "auth.verify_signup": Route(
        "tenant",
        "POST",
        lambda w: {"token": w.a.signup_token},
        lambda w: [{"token": w.b.signup_token}],
        refused=400,
        refused_text="This link has already been used or is no longer valid.",
    ),
    # KYC documents, as the owner of a merchant under review; B's would show B's merchant's identity papers.
    "merchant.kyc_document": Route(
        "applicant",
        "GET",
        lambda w: {"document_id": w.a.kyc_document},
        lambda w: [{"document_id": w.b.kyc_document}],
    ),
    "merchant.delete_kyc_document": Route(
        "applicant",
        "POST",
        lambda w: {"document_id": w.a.kyc_document},
        lambda w: [{"document_id": w.b.kyc_document}],
    ),
    # The review of B's application (its profile and documents) and every decision on it.
    "console.onboarding_review": Route(
        "tenant", "GET", lambda w: {"merchant_id": w.a.applicant}, lambda w: [{"merchant_id": w.b.applicant}]
    ),
    "console.onboarding_document": Route(
        "tenant",
        "GET",
        lambda w: {"merchant_id": w.a.applicant, "document_id": w.a.kyc_document},
        lambda w: [{"merchant_id": w.b.applicant, "document_id": w.b.kyc_document}],
    ),
    # Risk: B's alert (its payer's payment and why), B's rules (changed or deleted through A's host, B's
    # payments would be checked differently) and B's held payment (released or refunded, B's money would move).
    "console.risk_alert": Route(
        "tenant", "GET", lambda w: {"alert_id": w.a.risk_alert}, lambda w: [{"alert_id": w.b.risk_alert}]
    ),
    "console.risk_rule": Route(
        "tenant", "GET", lambda w: {"rule_id": w.a.risk_rule}, lambda w: [{"rule_id": w.b.risk_rule}]
    ),
    "console.update_risk_rule": Route(
        "tenant",
        "POST",
        lambda w: {"rule_id": w.a.risk_rule},
        lambda w: [{"rule_id": w.b.risk_rule}],
        data={
            "name": "taken over",
            "kind": "large_amount",
            "action": "flag",
            "currency": "USD",
            "subject": "",
            "amount_limit": "1.00",
        },
    ),
    "console.delete_risk_rule": Route(
        "tenant", "POST", lambda w: {"rule_id": w.a.risk_rule}, lambda w: [{"rule_id": w.b.risk_rule}]
    ),
    "console.release_held_payment": Route(
        "tenant", "POST", lambda w: {"intent_id": w.a.risk_held}, lambda w: [{"intent_id": w.b.risk_held}]
    ),
    "console.refund_held_payment": Route(
        "tenant", "POST", lambda w: {"intent_id": w.a.risk_held}, lambda w: [{"intent_id": w.b.risk_held}]
    ),
    "console.approve_merchant": Route(
        "tenant",
        "POST",
        lambda w: {"merchant_id": w.a.applicant},
        lambda w: [{"merchant_id": w.b.applicant}],
        data={"schedule_id": "", "risk_level": "low", "message": "approved from elsewhere"},
    ),
    "console.request_merchant_changes": Route(
        "tenant",
        "POST",
        lambda w: {"merchant_id": w.a.applicant},
        lambda w: [{"merchant_id": w.b.applicant}],
        data={"changes-message": "changes from elsewhere"},
    ),
    "console.reject_merchant": Route(
        "tenant",
        "POST",
        lambda w: {"merchant_id": w.a.applicant},
        lambda w: [{"merchant_id": w.b.applicant}],
        data={"reject-message": "rejected from elsewhere"},
    ),
    # The merchant dashboard, as the merchant's owner (who may roll and revoke).
    "merchant.roll_api_key": Route(
        "merchant",
        "POST",
        lambda w: {"key_id": w.a.api_key},
        lambda w: [{"key_id": w.b.api_key}],
        data={"expires_in": "24"},
    ),
    "merchant.payment": Route(
        "merchant", "GET", lambda w: {"intent_id": w.a.payment}, lambda w: [{"intent_id": w.b.payment}]
    ),
    "merchant.refund_payment": Route(
        "merchant",
        "POST",
        lambda w: {"intent_id": w.a.payment},
        lambda w: [{"intent_id": w.b.payment}],
        data={"amount": "1.00"},
    ),
    "merchant.revoke_api_key": Route(
        "merchant", "POST", lambda w: {"key_id": w.a.api_key}, lambda w: [{"key_id": w.b.api_key}]
    ),
    "merchant.webhook": Route(
        "merchant", "GET", lambda w: {"endpoint_id": w.a.webhook}, lambda w: [{"endpoint_id": w.b.webhook}]
    ),
    "merchant.update_webhook": Route(
        "merchant",
        "POST",
        lambda w: {"endpoint_id": w.a.webhook},
        lambda w: [{"endpoint_id": w.b.webhook}],
        data={"url": "http://127.0.0.1:9/changed", "events": "*"},
    ),
    "merchant.set_webhook_status": Route(
        "merchant",
        "POST",
        lambda w: {"endpoint_id": w.a.webhook},
        lambda w: [{"endpoint_id": w.b.webhook}],
        data={"disabled": "1"},
    ),
    "merchant.delete_webhook": Route(
        "merchant", "POST", lambda w: {"endpoint_id": w.a.webhook}, lambda w: [{"endpoint_id": w.b.webhook}]
    ),
    "merchant.resend_webhook_delivery": Route(
        "merchant",
        "POST",
        lambda w: {"endpoint_id": w.a.webhook, "delivery_id": w.a.delivery},
        lambda w: [{"endpoint_id": w.b.webhook, "delivery_id": w.b.delivery}],
    ),
    "merchant.settlement": Route(
        "merchant", "GET", lambda w: {"settlement_id": w.a.settlement}, lambda w: [{"settlement_id": w.b.settlement}]
    ),
    "merchant.settlement_csv": Route(
        "merchant", "GET", lambda w: {"settlement_id": w.a.settlement}, lambda w: [{"settlement_id": w.b.settlement}]
    ),
    "merchant.settlement_pdf": Route(
        "merchant", "GET", lambda w: {"settlement_id": w.a.settlement}, lambda w: [{"settlement_id": w.b.settlement}]
    ),
    # B's payout is pending: canceled through A's host, B's merchant would get its money back.
    "merchant.cancel_payout": Route(
        "merchant", "POST", lambda w: {"payout_id": w.a.payout}, lambda w: [{"payout_id": w.b.payout}]
    ),
    # B's batch, its payouts and the bank files with B's merchants' whole account numbers.
    "console.payout_batch": Route(
        "tenant", "GET", lambda w: {"batch_id": w.a.payout_batch}, lambda w: [{"batch_id": w.b.payout_batch}]
    ),
    "console.payout_batch_csv": Route(
        "tenant", "GET", lambda w: {"batch_id": w.a.payout_batch}, lambda w: [{"batch_id": w.b.payout_batch}]
    ),
    "console.payout_batch_xml": Route(
        "tenant", "GET", lambda w: {"batch_id": w.a.payout_batch}, lambda w: [{"batch_id": w.b.payout_batch}]
    ),
    # B's statement import and its lines; B's suspense items, and every step of their workflow (each would change
    # B's items, comments or journal).
    "console.statement_import": Route(
        "tenant",
        "GET",
        lambda w: {"import_id": w.a.statement_import},
        lambda w: [{"import_id": w.b.statement_import}],
    ),
    "console.suspense_item": Route(
        "tenant", "GET", lambda w: {"item_id": w.a.suspense_item}, lambda w: [{"item_id": w.b.suspense_item}]
    ),
    "console.assign_suspense_item": Route(
        "tenant",
        "POST",
        lambda w: {"item_id": w.a.suspense_item},
        lambda w: [{"item_id": w.b.suspense_item}, {"item_id": w.b.write_off}],
        data={"assignee": "someone@elsewhere.example.com"},
    ),
    "console.comment_suspense_item": Route(
        "tenant",
        "POST",
        lambda w: {"item_id": w.a.suspense_item},
        lambda w: [{"item_id": w.b.suspense_item}],
        data={"body": "a comment from elsewhere"},
    ),
    # Resolved by a match with the side's own payment (the record of the side whose item it is).
    "console.match_suspense_item": Route(
        "tenant",
        "POST",
        lambda w: {"item_id": w.a.suspense_item},
        lambda w: [{"item_id": w.b.suspense_item}],
        data=lambda side: {"record_type": "payment", "record_id": side.late_payment, "match_note": "found it"},
    ),
    "console.adjust_suspense_item": Route(
        "tenant",
        "POST",
        lambda w: {"item_id": w.a.suspense_item},
        lambda w: [{"item_id": w.b.suspense_item}],
        data={"purpose": "bank", "adjust_note": "booked elsewhere"},
    ),
    "console.request_suspense_write_off": Route(
        "tenant",
        "POST",
        lambda w: {"item_id": w.a.suspense_item},
        lambda w: [{"item_id": w.b.suspense_item}],
        data={"write_off_note": "too small to chase"},
    ),
    "console.approve_suspense_write_off": Route(
        "tenant", "POST", lambda w: {"item_id": w.a.write_off}, lambda w: [{"item_id": w.b.write_off}]
    ),
    "console.reject_suspense_write_off": Route(
        "tenant",
        "POST",
        lambda w: {"item_id": w.a.write_off},
        lambda w: [{"item_id": w.b.write_off}],
        data={"reject_note": "not yet"},
    ),
    # B's terminal stays active with its key: rotated or deactivated through A's host, B's device would stop.
    "merchant.rotate_terminal_key": Route(
        "merchant", "POST", lambda w: {"terminal_id": w.a.terminal}, lambda w: [{"terminal_id": w.b.terminal}]
    ),
    "merchant.deactivate_terminal": Route(
        "merchant", "POST", lambda w: {"terminal_id": w.a.terminal}, lambda w: [{"terminal_id": w.b.terminal}]
    ),
    # Exports (their pages, progress and files) and saved filters: the merchant's and the tenant staff's.
    "merchant.export": Route(
        "merchant", "GET", lambda w: {"export_id": w.a.merchant_export}, lambda w: [{"export_id": w.b.merchant_export}]
    ),
    "merchant.export_status": Route(
        "merchant", "GET", lambda w: {"export_id": w.a.merchant_export}, lambda w: [{"export_id": w.b.merchant_export}]
    ),
    "merchant.download_export": Route(
        "merchant", "GET", lambda w: {"export_id": w.a.merchant_export}, lambda w: [{"export_id": w.b.merchant_export}]
    ),
    "merchant.delete_saved_filter": Route(
        "merchant", "POST", lambda w: {"filter_id": w.a.merchant_filter}, lambda w: [{"filter_id": w.b.merchant_filter}]
    ),
    "console.export": Route(
        "tenant", "GET", lambda w: {"export_id": w.a.console_export}, lambda w: [{"export_id": w.b.console_export}]
    ),
    "console.export_status": Route(
        "tenant", "GET", lambda w: {"export_id": w.a.console_export}, lambda w: [{"export_id": w.b.console_export}]
    ),
    "console.download_export": Route(
        "tenant", "GET", lambda w: {"export_id": w.a.console_export}, lambda w: [{"export_id": w.b.console_export}]
    ),
    "console.delete_saved_filter": Route(
        "tenant", "POST", lambda w: {"filter_id": w.a.console_filter}, lambda w: [{"filter_id": w.b.console_filter}]
    ),
    # The merchant API, with the merchant's secret key; its refusal is Stripe's error object.
    "api.retrieve_payment_intent": Route(
        "api", "GET", lambda w: {"intent": w.a.payment}, lambda w: [{"intent": w.b.payment}], **API_REFUSAL
    ),
    "api.update_payment_intent": Route(
        "api",
        "POST",
        lambda w: {"intent": w.a.unconfirmed},
        lambda w: [{"intent": w.b.unconfirmed}],
        data={"metadata[note]": "changed", "description": "changed"},
        **API_REFUSAL,
    ),
    "api.confirm_payment_intent": Route(
        "api", "POST", lambda w: {"intent": w.a.unconfirmed}, lambda w: [{"intent": w.b.unconfirmed}], **API_REFUSAL
    ),
    "api.capture_payment_intent": Route(
        "api", "POST", lambda w: {"intent": w.a.held}, lambda w: [{"intent": w.b.held}], **API_REFUSAL
    ),
    "api.cancel_payment_intent": Route(
        "api", "POST", lambda w: {"intent": w.a.held}, lambda w: [{"intent": w.b.held}], **API_REFUSAL
    ),
    "api.retrieve_refund": Route(
        "api", "GET", lambda w: {"refund": w.a.refund}, lambda w: [{"refund": w.b.refund}], **API_REFUSAL
    ),
    "api.retrieve_balance_transaction": Route(
        "api",
        "GET",
        lambda w: {"id": w.a.balance_transaction},
        lambda w: [{"id": w.b.balance_transaction}],
        **API_REFUSAL,
    ),
    "api.retrieve_topup": Route(
        "api", "GET", lambda w: {"topup": w.a.topup}, lambda w: [{"topup": w.b.topup}], **API_REFUSAL
    ),
    "api.retrieve_transfer": Route(
        "api", "GET", lambda w: {"transfer": w.a.transfer}, lambda w: [{"transfer": w.b.transfer}], **API_REFUSAL
    ),
    "api.retrieve_payout": Route(
        "api", "GET", lambda w: {"payout": w.a.payout}, lambda w: [{"payout": w.b.payout}], **API_REFUSAL
    ),
    "api.cancel_payout": Route(
        "api", "POST", lambda w: {"payout": w.a.payout}, lambda w: [{"payout": w.b.payout}], **API_REFUSAL
    ),
    "api.retrieve_event": Route(
        "api", "GET", lambda w: {"id": w.a.event}, lambda w: [{"id": w.b.event}], **API_REFUSAL
    ),
    "api.retrieve_webhook_endpoint": Route(
        "api",
        "GET",
        lambda w: {"webhook_endpoint": w.a.webhook},
        lambda w: [{"webhook_endpoint": w.b.webhook}],
        **API_REFUSAL,
    ),
    "api.update_webhook_endpoint": Route(
        "api",
        "POST",
        lambda w: {"webhook_endpoint": w.a.webhook},
        lambda w: [{"webhook_endpoint": w.b.webhook}],
        data={"url": "http://127.0.0.1:9/changed", "description": "changed", "disabled": "true"},
        **API_REFUSAL,
    ),
    "api.delete_webhook_endpoint": Route(
        "api",
        "DELETE",
        lambda w: {"webhook_endpoint": w.a.webhook},
        lambda w: [{"webhook_endpoint": w.b.webhook}],
        **API_REFUSAL,
    ),
    # A channel's notification to a channel account: another tenant's account does not exist on A's host (its
    # body, signed with the same secret, would otherwise be acknowledged: it names no payment of either side).
    "notifications.receive": Route(
        "channel",
        "POST",
        lambda w: {"channel_account_id": w.a.channel},
        lambda w: [{"channel_account_id": w.b.channel}],
        refused_text="No such channel account on this site.",
    ),
    # A payer's checkout link: B's intent with B's own client secret is no page on A's host, and cannot be paid there.
    "checkout.page": Route(
        "payer",
        "GET",
        lambda w: {"intent_id": w.a.unconfirmed},
        lambda w: [{"intent_id": w.b.unconfirmed}],
        query=lambda side: {"client_secret": side.unconfirmed_secret},
    ),
    "checkout.pay": Route(
        "payer",
        "POST",
        lambda w: {"intent_id": w.a.unconfirmed},
        lambda w: [{"intent_id": w.b.unconfirmed}],
        data=lambda side: {"client_secret": side.unconfirmed_secret, "payment_method": "pm_card_visa"},
    ),
    "checkout.status": Route(
        "payer",
        "GET",
        lambda w: {"intent_id": w.a.unconfirmed},
        lambda w: [{"intent_id": w.b.unconfirmed}],
        query=lambda side: {"client_secret": side.unconfirmed_secret},
        refused_text='"not_found"',
    ),
    # Charge items, coupons and payment links of the merchant dashboard (as the merchant's owner).
    "merchant.charge_item": Route(
        "merchant", "GET", lambda w: {"item_id": w.a.charge_item}, lambda w: [{"item_id": w.b.charge_item}]
    ),
    "merchant.update_charge_item": Route(
        "merchant",
        "POST",
        lambda w: {"item_id": w.a.charge_item},
        lambda w: [{"item_id": w.b.charge_item}],
        data={"name": "Taken over", "unit": "piece", "unit_price": "0.01", "currency": "USD"},
    ),
    "merchant.set_charge_item_active": Route(
        "merchant",
        "POST",
        lambda w: {"item_id": w.a.charge_item},
        lambda w: [{"item_id": w.b.charge_item}],
        data={"active": "0"},
    ),
    "merchant.coupon": Route(
        "merchant", "GET", lambda w: {"coupon_id": w.a.coupon}, lambda w: [{"coupon_id": w.b.coupon}]
    ),
    "merchant.update_coupon": Route(
        "merchant",
        "POST",
        lambda w: {"coupon_id": w.a.coupon},
        lambda w: [{"coupon_id": w.b.coupon}],
        data={"code": "ALL100", "kind": "percent", "percent_off": "100"},
    ),
    "merchant.set_coupon_active": Route(
        "merchant",
        "POST",
        lambda w: {"coupon_id": w.a.coupon},
        lambda w: [{"coupon_id": w.b.coupon}],
        data={"active": "0"},
    ),
    "merchant.payment_link": Route(
        "merchant", "GET", lambda w: {"link_id": w.a.payment_link}, lambda w: [{"link_id": w.b.payment_link}]
    ),
    "merchant.payment_link_qr_png": Route(
        "merchant", "GET", lambda w: {"link_id": w.a.payment_link}, lambda w: [{"link_id": w.b.payment_link}]
    ),
    "merchant.payment_link_qr_svg": Route(
        "merchant", "GET", lambda w: {"link_id": w.a.payment_link}, lambda w: [{"link_id": w.b.payment_link}]
    ),
    "merchant.set_payment_link_active": Route(
        "merchant",
        "POST",
        lambda w: {"link_id": w.a.payment_link},
        lambda w: [{"link_id": w.b.payment_link}],
        data={"active": "0"},
    ),
    # A payer (signed in as nobody) opening a payment link: another tenant's link does not exist on A's host.
    "paylinks.page": Route(
        "payer", "GET", lambda w: {"link_id": w.a.payment_link}, lambda w: [{"link_id": w.b.payment_link}]
    ),
    # The platform console sees every tenant by design: what it must refuse is an id that names
    # no tenant, and a user id that belongs to another tenant than the one in the URL.
    "platform.tenant": Route(
        "platform", "GET", lambda w: {"tenant_id": w.a.id}, lambda w: [{"tenant_id": uuid.uuid4()}]
    ),
    "platform.set_status": Route(
        "platform",
        "POST",
        lambda w: {"tenant_id": w.a.id},
        lambda w: [{"tenant_id": uuid.uuid4()}],
        data={"status": "active"},
    ),
    "platform.set_platform_fee": Route(
        "platform",
        "POST",
        lambda w: {"tenant_id": w.a.id},
        lambda w: [{"tenant_id": uuid.uuid4()}],
        data={"percent": "0.5"},
    ),
    "platform.resend_invitation": Route(
        "platform",
        "POST",
        lambda w: {"tenant_id": w.a.id, "user_id": w.a.admin},
        lambda w: [
            {"tenant_id": w.a.id, "user_id": w.b.admin},
            {"tenant_id": uuid.uuid4(), "user_id": w.a.admin},
            {"tenant_id": w.a.id, "user_id": uuid.uuid4()},
        ],
    ),
}

EXEMPT = {
    # Flask's static files: a path into the portal's own static folder, the same on every site.
    "static",
    # A theme's CSS and images: a theme name and a path, shared by all tenants, no tenant data.
    "theme_static",
}
# The jobs dashboard (rq-dashboard, portal/platform/jobs_dashboard.py): the platform host only, platform
# admins only, who see every tenant's jobs by design; its variables are RQ's job ids, queue and registry
# names. tests/test_platform_console.py shows it is 404 on a tenant's host and refused to everyone else.
EXEMPT |= {
    f"rq_dashboard.{name}"
    for name in (
        "static",
        "queues_overview",
        "workers_overview",
        "jobs_overview",
        "job_view",
        "delete_job_view",
        "requeue_job_view",
        "requeue_all",
        "empty_queue",
        "compact_queue",
        "list_queues",
        "list_jobs",
        "job_info",
        "list_workers",
    )
}


def test_every_route_with_a_variable_is_in_the_table(app):
    with_variables = {rule.endpoint for rule in app.url_map.iter_rules() if rule.arguments}
    missing = sorted(with_variables - set(ROUTES) - EXEMPT)
    assert not missing, (
        f"routes with a URL variable missing from ROUTES in tests/test_cross_tenant_routes.py: {missing}; "
        "add each with how to build its URL from own and from another tenant's ids"
    )
    stale = sorted(set(ROUTES) - with_variables)
    assert not stale, f"ROUTES names routes that no longer exist (or take no variable): {stale}"


# --- the two tenants ---------------------------------------------------------------------


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, format="PNG")
    return out.getvalue()


def _side(app, make, slug: str, color) -> Side:
    tenant = make.tenant(slug, name=f"{slug.title()} Corp")
    pending_email = f"pending@{slug}.example.com"
    pending = make.user(tenant, pending_email, "operator", password=None)
    owner_email = f"owner@{slug}-shop.example.com"
    merchant = make.merchant(tenant, f"{slug.title()} Shop", owner_email)
    partner = make.merchant(tenant, f"{slug.title()} Partner", f"owner@{slug}-partner.example.com")
    with app.app_context():
        with tenant_context(db.session, tenant.id):
            users = {u.email: u for u in db.session.execute(sa.select(User)).scalars()}
            secret = app.config["SECRET_KEY"]
            reset_token = tokens.make(secret, "password-reset", users[tenant.admin_email])
            invitation_token = tokens.make(secret, "invitation", users[pending_email])
            logo = branding.store_logo(
                tenant.id, _png(color), app.config["UPLOAD_DIR"], app.config["LOGO_MAX_BYTES"], Actor.system()
            )
            ids = {email: user.id for email, user in users.items()}
            channel = channel_accounts.create_channel_account(
                tenant.id,
                channel_accounts.ChannelAccountInput(
                    name=f"{slug} sandbox",
                    type="sandbox",
                    currency="USD",
                    products=["card"],
                    credentials={"webhook_secret": CHANNEL_WEBHOOK_SECRET},
                ),
                {"card"},
                Actor.system(),
            )
            # Port 9 (discard) refuses connections: deliveries to it fail fast and stay pending.
            webhook, _ = webhooks.create_endpoint(
                tenant.id, merchant, False, "http://127.0.0.1:9/hooks", ["*"], Actor.system(), allow_private=True
            )
            merchant_ctx = intents.MerchantContext(tenant.id, merchant, False)
            payment = intents.create(
                merchant_ctx,
                amount=5000,
                currency="usd",
                payment_method="pm_card_visa",
                confirm=True,
            )
            unconfirmed = intents.create(merchant_ctx, amount=3000, currency="usd", payment_method="pm_card_visa")
            held = intents.create(
                merchant_ctx,
                amount=4000,
                currency="usd",
                payment_method="pm_card_visa",
                capture_method="manual",
                confirm=True,
            )
            refund = refunds.create(merchant_ctx, payment_intent=payment.id, amount=100)
            topup = balance_operations.create_topup(merchant_ctx, amount=10000, currency="usd")
            transfer = balance_operations.create_transfer(
                merchant_ctx, amount=1000, currency="usd", destination=str(partner)
            )
            payout = balance_operations.create_payout(merchant_ctx, amount=500, currency="usd")
            balance_transaction = db.session.execute(
                sa.select(BalanceTransaction.id).where(BalanceTransaction.source == topup.id)
            ).scalar_one()
            event = db.session.execute(
                sa.select(Event.id).where(Event.object_id == payment.id, Event.type == "payment_intent.succeeded")
            ).scalar_one()
            rule = channel_accounts.add_rule(tenant.id, merchant, channel.id, "exclude", None, Actor.system())
            # With `channel` excluded for the merchant, a second account takes its later payments (the API's
            # confirm route).
            channel_accounts.create_channel_account(
                tenant.id,
                channel_accounts.ChannelAccountInput(
                    name=f"{slug} sandbox 2", type="sandbox", currency="USD", products=["card"]
                ),
                {"card"},
                Actor.system(),
            )
            schedules.create_schedule(tenant.id, f"{slug} standard", Actor.system())
            fee_schedule = schedules.create_schedule(tenant.id, f"{slug} premium", Actor.system())
            schedules.add_version(
                tenant.id,
                fee_schedule.id,
                [FeeRule("card", "USD", Decimal("2.9"), 30)],
                ["card"],
                Actor.system(),
                note=f"{slug} launch",
            )
            schedules.assign(tenant.id, merchant, fee_schedule.id, Actor.system())
            fee_schedule_id = fee_schedule.id
            db.session.commit()
            # A payment captured ten days ago, settled (T+1): the merchant's settlement.
            settled = intents.create(
                merchant_ctx, amount=2500, currency="usd", payment_method="pm_card_visa", confirm=True
            )
            db.session.execute(
                sa.update(BalanceTransaction)
                .where(BalanceTransaction.source == settled.id)
                .values(created_at=datetime.now(UTC) - timedelta(days=10))
            )
            db.session.commit()
            run = ClearingRun(tenant_id=tenant.id, kind="settlement")
            db.session.add(run)
            db.session.commit()
            assert settlement.settle(tenant.id, run)["settlements"] == 1
            settlement_id = db.session.execute(sa.select(Settlement.id)).scalar_one()
            # A EUR payout sent in a bank batch (the USD `payout` stays pending), with the debtor set so
            # that the batch has both its files.
            balance_operations.create_topup(merchant_ctx, amount=10000, currency="eur")
            balance_operations.create_payout(merchant_ctx, amount=2000, currency="eur")
            payouts.set_bank_account(
                tenant.id, merchant, holder_name=f"{slug} shop", account="DE89370400440532013000", actor=Actor.system()
            )
            payouts.set_debtor(
                tenant.id,
                name=f"{slug} corp",
                iban="FR1420041010050500013M02606",
                bic="PSSTFRPPPAR",
                actor=Actor.system(),
            )
            payout_batch = payouts.create_batch(tenant.id, "EUR", False, run_id=None, created_by=None)
            db.session.commit()
            payout_batch_id = payout_batch.id
            # A statement of `channel`: `payment` and `refund` (matched: no record is missing, so no alert is
            # e-mailed) and two lines nobody knows, each a suspense item; the write-off of one is requested by
            # `pending` (someone other than the admin, who may approve it).
            reconciliation.save_mapping(
                tenant.id,
                channel.id,
                ColumnMapping(reference="ref", amount="amount", date="date", currency="currency"),
                Actor.system(),
            )
            today = datetime.now(UTC).date().isoformat()
            statement = reconciliation.store_upload(
                tenant.id,
                io.BytesIO(
                    f"ref,amount,currency,date\n{payment.channel_reference},50.00,USD,{today}\n"
                    f"{refund.channel_reference},-1.00,USD,{today}\n"
                    f"ch_open_{slug},7.00,USD,{today}\nch_small_{slug},3.00,USD,{today}\n".encode()
                ),
                filename=f"{slug}.csv",
                fmt="csv",
                channel_account_id=channel.id,
                livemode=None,
                upload_dir=app.config["UPLOAD_DIR"],
                actor=Actor.system(),
            )
            statement_import = statement.import_.id
            counts = reconciliation.run_import(tenant.id, statement_import)
            assert (counts["matched"], counts["long"], counts["short"]) == (2, 2, 0)
            items = dict(
                db.session.execute(
                    sa.select(StatementLine.reference, SuspenseItem.id).join(
                        SuspenseItem,
                        sa.and_(
                            SuspenseItem.tenant_id == StatementLine.tenant_id,
                            SuspenseItem.statement_line_id == StatementLine.id,
                        ),
                    )
                ).all()
            )
            suspense_item, write_off = items[f"ch_open_{slug}"], items[f"ch_small_{slug}"]
            late_payment = intents.create(
                merchant_ctx, amount=700, currency="usd", payment_method="pm_card_visa", confirm=True
            ).id
            suspense.request_write_off(
                tenant.id, write_off, "too small to chase", Actor(kind="user", id=pending, email=pending_email)
            )
            db.session.commit()
            owner = Actor(kind="user", id=ids[owner_email], email=owner_email)
            api_key, api_secret = api_keys.create_key(tenant.id, merchant, "test", f"{slug} backend", owner)
            terminal, terminal_key = terminals.register(
                tenant.id,
                merchant,
                name=f"{slug} till",
                kind="pos",
                serial_number=f"SN-{slug}",
                location=None,
                mode="test",
                actor=owner,
            )
            admin = Actor(kind="user", id=ids[tenant.admin_email], email=tenant.admin_email)
            zone = ZoneInfo("UTC")
            merchant_scope = listings.Scope(tenant.id, merchant, zone)
            merchant_export = exports.request_export(merchant_scope, "payments", "csv", {}, owner).id
            exports.run_export(str(tenant.id), str(merchant_export))
            console_export = exports.request_export(
                listings.Scope(tenant.id, None, zone), "payments", "xlsx", {}, admin
            ).id
            exports.run_export(str(tenant.id), str(console_export))
            merchant_filter = saved_filters.save(
                tenant.id, merchant, "payments", "Paid", {"status": "succeeded"}, owner
            ).id
            console_filter = saved_filters.save(tenant.id, None, "reports", "Monthly", {"period": "month"}, admin).id
            charge_item = catalog.create_item(
                tenant.id, merchant, catalog.ChargeItemInput(f"{slug} class", "12.00", "USD"), {"card"}, owner
            ).id
            coupon = coupons.create_coupon(
                tenant.id, merchant, coupons.CouponInput(f"{slug.upper()}10", "percent", percent_off="10"), owner
            ).id
            payment_link = links.create_link(
                tenant.id,
                merchant,
                links.LinkInput(f"{slug} pass", items=[links.LinkItemInput(charge_item, quantity=2)]),
                owner,
            ).id
            risk_rule = risk_rules.create(
                tenant.id,
                risk_rules.RuleInput(
                    name=f"{slug} big tickets", kind="large_amount", action="hold", currency="USD", amount_limit=90_000
                ),
                admin,
            ).id
            risk_held = intents.create(
                merchant_ctx, amount=95_000, currency="usd", payment_method="pm_card_visa", confirm=True
            ).id
            risk_alert = db.session.execute(
                sa.select(RiskAlert.id).where(RiskAlert.payment_intent_id == risk_held)
            ).scalar_one()
        webhooks.dispatch(tenant.id)
        with tenant_context(db.session, tenant.id):
            delivery = db.session.execute(sa.select(webhooks.WebhookDelivery.id)).scalars().first()
            applicant_email = f"founder@{slug}-noodles.example.com"
            applicant_user = signups.verify(
                signups.start(tenant.id, f"{slug.title()} Noodles", applicant_email, PASSWORD, None).signup, None
            )
            applicant = applicant_user.merchant_id
            as_applicant = Actor(kind="user", id=applicant_user.id, email=applicant_email)
            profiles.save(
                tenant.id,
                applicant,
                profiles.ProfileInput(
                    legal_name=f"{slug.title()} Noodles Ltd",
                    registration_number="HRB 1",
                    legal_representative="Mei Chen",
                    address="1 Market Street",
                    country="DE",
                    monthly_volume="1000.00",
                    volume_currency="EUR",
                    bank_holder_name="Noodles",
                    bank_account="DE89370400440532013000",
                ),
                as_applicant,
            )
            for kind in review.REQUIRED_DOCUMENTS:
                kyc_document = documents.upload(
                    tenant.id,
                    applicant,
                    kind,
                    f"{kind}.png",
                    _png(color),
                    upload_dir=app.config["UPLOAD_DIR"],
                    max_bytes=app.config["KYC_DOCUMENT_MAX_BYTES"],
                    actor=as_applicant,
                ).id
            review.submit(tenant.id, applicant, as_applicant)
            pending_signup = signups.start(
                tenant.id, f"{slug.title()} Dumplings", f"founder@{slug}-dumplings.example.com", PASSWORD, None
            ).signup
            signup_token = tokens.make(secret, "signup", pending_signup)
        db.session.remove()
    return Side(
        id=tenant.id,
        host=tenant.host,
        admin_email=tenant.admin_email,
        admin=ids[tenant.admin_email],
        pending=pending,
        pending_email=pending_email,
        merchant=merchant,
        owner=ids[owner_email],
        logo=logo,
        reset_token=reset_token,
        invitation_token=invitation_token,
        channel=channel.id,
        rule=rule.id,
        api_key=api_key.id,
        terminal=terminal.id,
        terminal_key=terminal_key,
        payment=payment.id,
        owner_email=owner_email,
        api_secret=api_secret,
        unconfirmed=unconfirmed.id,
        unconfirmed_secret=unconfirmed.client_secret,
        held=held.id,
        refund=refund.id,
        event=event,
        webhook=webhook.id,
        delivery=delivery,
        topup=topup.id,
        transfer=transfer.id,
        payout=payout.id,
        balance_transaction=balance_transaction,
        fee_schedule=fee_schedule_id,
        settlement=settlement_id,
        payout_batch=payout_batch_id,
        statement_import=statement_import,
        late_payment=late_payment,
        suspense_item=suspense_item,
        write_off=write_off,
        merchant_export=merchant_export,
        console_export=console_export,
        merchant_filter=merchant_filter,
        console_filter=console_filter,
        charge_item=charge_item,
        coupon=coupon,
        payment_link=payment_link,
        applicant=applicant,
        applicant_email=applicant_email,
        kyc_document=kyc_document,
        signup_token=signup_token,
        risk_rule=risk_rule,
        risk_held=risk_held,
        risk_alert=risk_alert,
    )


@pytest.fixture
def world(app, make, outbox) -> World:
    a = _side(app, make, "alpha", (200, 0, 0))
    b = _side(app, make, "beta", (0, 0, 200))
    assert a.logo != b.logo
    # The setup's own e-mails (the alerts of the held payments) are delivered and put aside: the test
    # looks for e-mails its requests cause.
    outbox()
    shutil.rmtree(app.config["MAIL_DIR"], ignore_errors=True)
    return World(a, b, make.platform_admin())


def _snapshot(owner_engine, tenant_id) -> dict:
    """What B's people would notice changing: accounts, passwords, states, merchants, brand, status."""
    with owner_engine.connect() as conn:
        return {
            "users": conn.execute(
                sa.text("SELECT id, email, role, password_hash, is_active FROM users WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "merchants": conn.execute(
                sa.text(
                    "SELECT id, name, status, onboarding_status, review_message, risk_level"
                    " FROM merchants WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "merchant_signups": conn.execute(
                sa.text("SELECT id, verified_at, merchant_id FROM merchant_signups WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "merchant_profiles": conn.execute(
                sa.text("SELECT merchant_id, legal_name FROM merchant_profiles WHERE tenant_id = :t ORDER BY 1"),
                {"t": tenant_id},
            ).all(),
            "kyc_documents": conn.execute(
                sa.text("SELECT id, storage_name FROM kyc_documents WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "brands": conn.execute(
                sa.text("SELECT stage, display_name, logo_file FROM tenant_brands WHERE tenant_id = :t ORDER BY stage"),
                {"t": tenant_id},
            ).all(),
            "tenant": conn.execute(sa.text("SELECT status FROM tenants WHERE id = :t"), {"t": tenant_id}).all(),
            "channels": conn.execute(
                sa.text("SELECT id, name, status, credentials_encrypted FROM channel_accounts WHERE tenant_id = :t"),
                {"t": tenant_id},
            ).all(),
            "rules": conn.execute(
                sa.text("SELECT id, action FROM routing_rules WHERE tenant_id = :t ORDER BY id"), {"t": tenant_id}
            ).all(),
            "payments": conn.execute(
                sa.text(
                    "SELECT id, status, amount_received, amount_capturable, amount_refunded, metadata, description"
                    " FROM payment_intents WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "webhook_endpoints": conn.execute(
                sa.text(
                    "SELECT id, url, status, enabled_events, description, secret_encrypted"
                    " FROM webhook_endpoints WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "webhook_deliveries": conn.execute(
                sa.text(
                    "SELECT id, endpoint_id, status, attempts, next_attempt_at, last_attempt_at"
                    " FROM webhook_deliveries WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "fee_schedules": conn.execute(
                sa.text("SELECT id, name, is_default FROM fee_schedules WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "fee_schedule_versions": conn.execute(
                sa.text(
                    "SELECT id, schedule_id, number, rules FROM fee_schedule_versions WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "merchant_fee_schedules": conn.execute(
                sa.text(
                    "SELECT merchant_id, schedule_id FROM merchant_fee_schedules"
                    " WHERE tenant_id = :t ORDER BY merchant_id"
                ),
                {"t": tenant_id},
            ).all(),
            "merchant_settlement_terms": conn.execute(
                sa.text(
                    "SELECT merchant_id, delay_days FROM merchant_settlement_terms"
                    " WHERE tenant_id = :t ORDER BY merchant_id"
                ),
                {"t": tenant_id},
            ).all(),
            "platform_fees": conn.execute(
                sa.text("SELECT id, percent FROM platform_fees WHERE tenant_id = :t ORDER BY id"), {"t": tenant_id}
            ).all(),
            "payouts": conn.execute(
                sa.text("SELECT id, status, batch_id, failure_message FROM payouts WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "payout_batches": conn.execute(
                sa.text(
                    "SELECT id, count, paid_count, failed_count FROM payout_batches WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "merchant_bank_accounts": conn.execute(
                sa.text(
                    "SELECT merchant_id, holder_name, account_encrypted FROM merchant_bank_accounts"
                    " WHERE tenant_id = :t ORDER BY merchant_id"
                ),
                {"t": tenant_id},
            ).all(),
            "debtor": conn.execute(
                sa.text(
                    "SELECT debtor_name, debtor_iban_encrypted, debtor_bic FROM clearing_settings WHERE tenant_id = :t"
                ),
                {"t": tenant_id},
            ).all(),
            "statement_mappings": conn.execute(
                sa.text("SELECT id, mapping FROM statement_mappings WHERE tenant_id = :t ORDER BY id"), {"t": tenant_id}
            ).all(),
            "statement_imports": conn.execute(
                sa.text("SELECT id, status, run_id, counts FROM statement_imports WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "suspense_items": conn.execute(
                sa.text(
                    "SELECT id, status, assignee, record_type, record_id, resolution, resolution_note, requested_by,"
                    " resolved_by FROM suspense_items WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "suspense_comments": conn.execute(
                sa.text("SELECT id, body FROM suspense_comments WHERE tenant_id = :t ORDER BY id"), {"t": tenant_id}
            ).all(),
            "journal_entries": conn.execute(
                sa.text("SELECT count(*) FROM journal_entries WHERE tenant_id = :t"), {"t": tenant_id}
            ).all(),
            "terminals": conn.execute(
                sa.text("SELECT id, status, key_hash FROM terminals WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "report_exports": conn.execute(
                sa.text("SELECT id, status, rows_done, file_name FROM report_exports WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "saved_report_filters": conn.execute(
                sa.text("SELECT id, name, filters FROM saved_report_filters WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "charge_items": conn.execute(
                sa.text(
                    "SELECT id, name, unit_amount, active, updated_at FROM charge_items"
                    " WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "coupons": conn.execute(
                sa.text(
                    "SELECT id, code, percent_off_bp, active, times_redeemed FROM coupons"
                    " WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "payment_links": conn.execute(
                sa.text("SELECT id, name, active, updated_at FROM payment_links WHERE tenant_id = :t ORDER BY id"),
                {"t": tenant_id},
            ).all(),
            "orders": conn.execute(sa.text("SELECT count(*) FROM orders WHERE tenant_id = :t"), {"t": tenant_id}).all(),
            "risk_rules": conn.execute(
                sa.text(
                    "SELECT id, name, action, amount_limit, enabled, updated_at FROM risk_rules"
                    " WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "risk_review": conn.execute(
                sa.text(
                    "SELECT id, risk_review, amount_refunded FROM payment_intents"
                    " WHERE tenant_id = :t AND risk_review IS NOT NULL ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
            "api_keys": conn.execute(
                sa.text(
                    "SELECT id, merchant_id, name, key_hash, expires_at, revoked_at, last_used_at"
                    " FROM api_keys WHERE tenant_id = :t ORDER BY id"
                ),
                {"t": tenant_id},
            ).all(),
        }


# --- the test ----------------------------------------------------------------------------


def _url(app, endpoint: str, values: dict) -> str:
    rule_arguments = {a for rule in app.url_map.iter_rules(endpoint) for a in rule.arguments}
    assert set(values) == rule_arguments, (
        f"{endpoint}: the table gives {sorted(values)}, the route takes {sorted(rule_arguments)}"
    )
    return app.url_map.bind("localhost").build(endpoint, values)


def _channel_notification() -> tuple[dict, bytes]:
    """A sandbox notification, signed now with the sides' webhook secret, about a charge neither side made."""
    created = int(time.time())
    charge = {"id": "sbx_ch_elsewhere", "status": "succeeded", "amount": 100, "currency": "usd"}
    body = json.dumps({"id": "sbx_evt_1", "type": "charge.succeeded", "created": created, "data": {"object": charge}})
    signature = sign_payload(Secret(CHANNEL_WEBHOOK_SECRET), body.encode(), created)
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature}, body.encode()


def _call(client, route: Route, url: str, csrf_page: str | None, side: Side | None = None):
    """Make the request (`side`: whose ids are in the URL, for data built from them); the body is read and
    the response closed (a logo is a streamed file)."""
    data = route.data(side) if callable(route.data) else route.data
    if route.query is not None:
        url = f"{url}?{urlencode(route.query(side))}"
    if route.method == "GET":
        response = client.get(url)
    elif route.method == "DELETE":
        response = client.delete(url)
    elif route.who == "channel":
        headers, body = _channel_notification()
        response = client.post(url, data=body, headers=headers)
    elif route.who == "api":
        response = client.post(url, data=data)
    else:
        response = client.post(url, data={**data, "csrf_token": client.csrf_token(csrf_page)})
    response.get_data()
    response.close()
    return response


def _signed_in(site, host: str, email: str):
    client = site(host)
    assert client.login(email, PASSWORD).status_code == 302, f"{email} could not sign in on {host}"
    return client


# Where each kind of route signs in on a tenant's side: (e-mail of the side, a page with a CSRF token).
TENANT_SIDE_LOGINS: dict[str, tuple[Callable[[Side], str], str]] = {
    "tenant": (lambda side: side.admin_email, "/console/"),
    "merchant": (lambda side: side.owner_email, "/merchant/"),
    "applicant": (lambda side: side.applicant_email, "/merchant/"),
}


class ApiClient:
    """A merchant's backend calling the API on its tenant's host: every request carries its key."""

    def __init__(self, site, side: Side):
        self.client = site(side.host)
        self.headers = {"Authorization": f"Bearer {side.api_secret}"}

    def get(self, path: str):
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, data=None):
        return self.client.post(path, data=data, headers=self.headers)

    def delete(self, path: str):
        # (SiteClient has no delete: the browser-facing routes take only GET and POST.)
        return self.client.client.delete(path, base_url=self.client.base_url, headers=self.headers)


def _on_side(site, side: Side, who: str):
    """A client of `side` for a kind of route on a tenant's host, and its page with a CSRF token."""
    if who == "api":
        return ApiClient(site, side), None
    if who == "channel":
        return site(side.host), None
    if who == "payer":
        return site(side.host), "/login"
    email_of, home = TENANT_SIDE_LOGINS[who]
    return _signed_in(site, side.host, email_of(side)), home


@pytest.mark.parametrize("endpoint", sorted(ROUTES))
def test_another_tenants_ids_are_refused(app, site, world, owner_engine, outbox, endpoint):
    route = ROUTES[endpoint]
    a, b = world.a, world.b
    if route.who != "platform":
        client, home = _on_side(site, a, route.who)
    else:
        client, home = _signed_in(site, "localhost", world.platform_admin), "/platform/"
    before = _snapshot(owner_engine, b.id)

    for values in route.foreign(world):
        url = _url(app, endpoint, values)
        response = _call(client, route, url, home, b)
        assert response.status_code == route.refused, f"{route.method} {url} answered {response.status_code}"
        text = response.get_data(as_text=True)
        assert route.refused_text in text, url
        for secret in (b.admin_email, b.pending_email, "Beta Shop", "Beta Noodles", b.applicant_email):
            assert secret not in text, f"{url} shows {secret}"

    assert _snapshot(owner_engine, b.id) == before, "a request on A's host changed B's data"
    b_addresses = {b.admin_email, b.pending_email, "owner@beta-shop.example.com", b.applicant_email}
    assert not [m["To"] for m in outbox() if m["To"] in b_addresses], "someone at B got an e-mail"
    assert site(b.host).login(b.admin_email, PASSWORD).status_code == 302, "B's admin can no longer sign in"

    # Control: A's own ids on the same route are not refused.
    url = _url(app, endpoint, route.own(world))
    response = _call(client, route, url, home, a)
    assert response.status_code in (200, 302), f"control {route.method} {url} answered {response.status_code}"

    # Control: B's ids are real: on B's own host, B's admin (merchant owner, key) is not refused.
    if route.who != "platform":
        owner_side, home = _on_side(site, b, route.who)
        for values in route.foreign(world):
            url = _url(app, endpoint, values)
            response = _call(owner_side, route, url, home, b)
            assert response.status_code in (200, 302), f"control on B: {route.method} {url} -> {response.status_code}"


@pytest.mark.parametrize("path", ["/platform/tenants/{}", "/platform/tenants/{}/admins/{}/invite"])
def test_platform_console_answers_404_for_an_unknown_tenant(site, world, path):
    client = _signed_in(site, "localhost", world.platform_admin)
    url = path.format(uuid.uuid4(), uuid.uuid4())
    if url.endswith("/invite"):
        response = client.post(url, data={"csrf_token": client.csrf_token("/platform/")})
    else:
        response = client.get(url)
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)
    # Control: a real tenant's page opens.
    assert client.get(f"/platform/tenants/{world.a.id}").status_code == 200


def test_tenant_ids_on_the_platform_routes_are_404_on_a_tenant_host(app, site, world):
    """The platform console's URLs, even with real ids, do not exist on a tenant's host."""
    client = _signed_in(site, world.a.host, world.a.admin_email)
    response = client.get(_url(app, "platform.tenant", {"tenant_id": world.a.id}))
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)
    platform = _signed_in(site, "localhost", world.platform_admin)
    assert platform.get(_url(app, "platform.tenant", {"tenant_id": world.a.id})).status_code == 200
