"""The payment core's Prometheus counters: payment outcomes and failed webhook deliveries.

Plain `prometheus_client` counters, incremented after the transaction that applied the outcome
commits (a rolled-back outcome is not counted). In a process started with
`PROMETHEUS_MULTIPROC_DIR` (gunicorn, the RQ workers under `make run`) they are written to that
directory, so the web app's `/metrics` sums every process of the host (`portal.metrics`).
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from prometheus_client import Counter

from core.db import db
from payments.models import ChannelAccount, PaymentIntent

PAYMENTS = Counter(
    "payplat_payments",
    "PaymentIntents that entered a status through a channel's outcome (or no channel taking them), "
    "by that status and the channel account's type",
    ["status", "channel"],
)
WEBHOOK_FAILURES = Counter(
    "payplat_webhook_delivery_failures",
    "Webhook delivery attempts that failed: `http_status` (the endpoint answered other than 2xx) or "
    "`no_answer` (refused, unreachable, timed out)",
    ["reason"],
)

# An account's type may be changed by its tenant: what is remembered is read again after a minute.
_TYPE_TTL = 60.0
_types: dict[uuid.UUID, tuple[str, float]] = {}


def channel_type(tenant_id: uuid.UUID, account_id: uuid.UUID | None) -> str:
    if account_id is None:
        return "none"
    now = time.monotonic()
    known = _types.get(account_id)
    if known is not None and known[1] > now:
        return known[0]
    found = db.session.scalar(
        sa.select(ChannelAccount.type).where(ChannelAccount.tenant_id == tenant_id, ChannelAccount.id == account_id)
    )
    kind = found or "unknown"
    _types[account_id] = (kind, now + _TYPE_TTL)
    return kind


def payment_outcome(pi: PaymentIntent, before: str) -> tuple[str, str] | None:
    """What to count for `pi` once its transaction commits: its new status and channel type, or
    None when the status did not change. Called before the commit (the type may need a query)."""
    if pi.status == before:
        return None
    return pi.status, channel_type(pi.tenant_id, pi.channel_account_id)


def count_payment(outcome: tuple[str, str] | None) -> None:
    if outcome is not None:
        PAYMENTS.labels(*outcome).inc()


def count_webhook_failure(answered: bool) -> None:
    WEBHOOK_FAILURES.labels("http_status" if answered else "no_answer").inc()
