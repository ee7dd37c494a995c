"""Merchant webhooks: endpoints, the delivery engine and its delivery log.

How an event reaches a merchant:

1. A use case records an `Event` (`payments.events.record`) in its own transaction: the outbox.
2. When a transaction that added events commits, a session hook queues `dispatch(tenant_id)`
   (best effort: with Redis down the payment still succeeds and the sweep picks the events up).
3. `dispatch` takes the tenant's undispatched events (`FOR UPDATE SKIP LOCKED`, oldest first),
   creates one pending `WebhookDelivery` per enabled endpoint of the same merchant and mode whose
   `enabled_events` match (unique per endpoint and event), marks the events dispatched, commits,
   and queues `deliver` for each new delivery.
4. `deliver` claims one attempt (locks the row, checks it is the expected attempt and still
   pending, counts it, writes when the next attempt is due should this one never report back),
   commits, POSTs the Stripe-shaped event signed like Stripe (`Stripe-Signature: t=..,v1=..`)
   with no transaction open, then records the answer. 2xx: `succeeded`, once. Otherwise the next
   attempt is scheduled through RQ's scheduler (`RETRY_DELAYS`); three days after the delivery
   was created it is `failed`. The merchant may resend any delivery: one more attempt, now.
5. `sweep` (every minute, platform scope) re-queues what a lost job or an unreachable Redis
   left behind: events undispatched for over a minute, deliveries overdue for over a minute.

Every job is idempotent: RQ job ids are deterministic per delivery attempt (and per sweep
minute), and the attempt number in the row decides whether a job still has work to do.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
import string
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from rq import Retry
from sqlalchemy import event as orm_event
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from core import crypto, queue, sweeps
from core.db import db
from payments import metrics, objects
from payments.channels.base import Secret, sign_payload
from payments.errors import InvalidRequest, NotFound
from payments.models import Event
from tenants import audit, isolation
from tenants.isolation import TenantOwned

log = logging.getLogger(__name__)

QUEUE = "webhooks"
# The event types a merchant can subscribe to; "*" is every type, present and future.
EVENT_TYPES = (
    "payment_intent.created",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.amount_capturable_updated",
    "payment_intent.updated",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "topup.created",
    "topup.succeeded",
    "transfer.created",
    "payout.created",
    "payout.canceled",
)
ALL_EVENTS = "*"
ENDPOINT_STATUSES = ("enabled", "disabled")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
MAX_ENDPOINTS = 16  # per merchant and mode, as Stripe
URL_MAX = 2048
DESCRIPTION_MAX = 500
SECRET_PREFIX = "whsec_"
SECRET_RANDOM_CHARS = 32
_ALPHABET = string.ascii_letters + string.digits

# After attempt n fails, attempt n+1 follows RETRY_DELAYS[n-1] later (the last delay repeats),
# until the next attempt would fall more than GIVE_UP_AFTER after the delivery was created.
RETRY_DELAYS = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
)
GIVE_UP_AFTER = timedelta(days=3)
CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 15.0
EXCERPT_CHARS = 500
ERROR_CHARS = 500
DISPATCH_BATCH = 200
SWEEP_INTERVAL = 60  # seconds
SWEEP_GRACE = timedelta(minutes=1)  # how late work may be before the sweep re-queues it
SWEEP_LIMIT = 1000  # overdue deliveries re-queued per sweep run
# For unexpected errors (database away): RQ runs the job again; the attempt guard keeps it safe.
JOB_RETRY = (10, 60, 300)


def _now() -> datetime:
    return datetime.now(UTC)


def _retry() -> Retry:
    return Retry(max=len(JOB_RETRY), interval=list(JOB_RETRY))


# --- models ----------------------------------------------------------------------------------


class WebhookEndpoint(TenantOwned, db.Model):
    """A merchant's URL that receives its events of one mode (ids `we_...`).

    The signing secret (`whsec_...`) is stored encrypted and shown to the merchant only once.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    merchant_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    livemode: Mapped[bool] = mapped_column(default=False)
    url: Mapped[str] = mapped_column(sa.String(URL_MAX))
    enabled_events: Mapped[list[str]] = mapped_column(ARRAY(sa.String(60)))
    description: Mapped[str | None] = mapped_column(sa.String(DESCRIPTION_MAX))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONB, default=dict, server_default="{}")
    secret_encrypted: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(10), default="enabled")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now(), onupdate=sa.func.now()
    )

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "merchant_id"], ["merchants.tenant_id", "merchants.id"], ondelete="CASCADE"
        ),
        sa.CheckConstraint("status IN ('enabled', 'disabled')", name="status"),
        sa.CheckConstraint("cardinality(enabled_events) > 0", name="enabled_events"),
        sa.Index(
            "ix_webhook_endpoints_tenant_id_merchant_id_created_at_id", "tenant_id", "merchant_id", "created_at", "id"
        ),
    )

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"

    def listens_to(self, event_type: str) -> bool:
        return ALL_EVENTS in self.enabled_events or event_type in self.enabled_events


class WebhookDelivery(TenantOwned, db.Model):
    """One event for one endpoint, and what became of sending it (the delivery log).

    `attempts` counts the POSTs made (a claimed attempt counts before its answer arrives);
    `next_attempt_at` is when the next automatic attempt is due while `pending`.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[str] = mapped_column(sa.String(40))
    event_id: Mapped[str] = mapped_column(sa.String(40))
    status: Mapped[str] = mapped_column(sa.String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    response_status: Mapped[int | None] = mapped_column()
    response_body_excerpt: Mapped[str | None] = mapped_column(sa.String(EXCERPT_CHARS))
    error: Mapped[str | None] = mapped_column(sa.String(ERROR_CHARS))
    delivered_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["tenant_id", "endpoint_id"],
            ["webhook_endpoints.tenant_id", "webhook_endpoints.id"],
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tenant_id", "event_id"], ["events.tenant_id", "events.id"], ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        sa.CheckConstraint("attempts >= 0", name="attempts"),
        sa.UniqueConstraint("tenant_id", "endpoint_id", "event_id"),
        sa.Index(
            "ix_webhook_deliveries_tenant_id_endpoint_id_created_at_id", "tenant_id", "endpoint_id", "created_at", "id"
        ),
        sa.Index(
            "ix_webhook_deliveries_pending",
            "tenant_id",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )


# --- endpoints (use cases) -----------------------------------------------------------------


class UnsafeDestination(ValueError):
    """A URL that points into a private network (refused unless private addresses are allowed)."""


_allow_private_destinations = False


def configure(*, allow_private: bool) -> None:
    """Whether deliveries may go to loopback and private addresses (development, tests)."""
    global _allow_private_destinations
    _allow_private_destinations = bool(allow_private)


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_destination(host: str, *, resolve: bool = True) -> None:
    """Refuse a host that is, or resolves to, a loopback, private, link-local or reserved address."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith((".localhost", ".local", ".internal")):
        raise UnsafeDestination(f"{host} is a local name")
    try:
        literal = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        if not _is_public(name):
            raise UnsafeDestination(f"{host} is not a public address")
        return
    if not resolve:
        return
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return  # not resolvable now: checked again before every delivery
    for info in infos:
        if not _is_public(str(info[4][0])):
            raise UnsafeDestination(f"{host} resolves to a non-public address")


def clean_url(value: Any, *, livemode: bool, allow_private: bool) -> str:
    url = str(value or "").strip()
    if not url:
        raise InvalidRequest("Missing required param: url.", code="parameter_missing", param="url")
    if len(url) > URL_MAX:
        raise InvalidRequest(f"The URL can be at most {URL_MAX} characters.", code="url_invalid", param="url")
    invalid = InvalidRequest("Invalid URL: use an http:// or https:// address.", code="url_invalid", param="url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise invalid from None
    if parts.scheme not in ("http", "https") or not host:
        raise invalid
    if parts.username or parts.password:
        raise InvalidRequest("The URL must not contain a user name or password.", code="url_invalid", param="url")
    if not allow_private:
        if livemode and parts.scheme != "https":
            raise InvalidRequest("Live-mode endpoints must use https://.", code="url_invalid", param="url")
        try:
            check_destination(host)
        except UnsafeDestination as exc:
            raise InvalidRequest(
                f"Invalid URL: {exc}. Webhooks go to addresses on the public internet.", code="url_invalid", param="url"
            ) from exc
    return url


def clean_events(value: Any) -> list[str]:
    """A list (or a comma-separated text) of known event types; "*" means all of them."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    chosen: list[str] = []
    for item in items:
        name = str(item).strip()
        if not name or name in chosen:
            continue
        if name != ALL_EVENTS and name not in EVENT_TYPES:
            raise InvalidRequest(
                f"Invalid enabled_events: '{name}' is not an event type (use * or one of {', '.join(EVENT_TYPES)}).",
                param="enabled_events",
            )
        chosen.append(name)
    if not chosen:
        raise InvalidRequest(
            "Choose at least one event type, or * for all.", code="parameter_missing", param="enabled_events"
        )
    return [ALL_EVENTS] if ALL_EVENTS in chosen else chosen


def clean_description(value: Any) -> str | None:
    text = str(value or "").strip()
    if len(text) > DESCRIPTION_MAX:
        raise InvalidRequest(f"The description can be at most {DESCRIPTION_MAX} characters.", param="description")
    return text or None


def new_secret() -> str:
    return SECRET_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_RANDOM_CHARS))


def _audit_fields(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """What the audit log keeps of an endpoint: never its secret."""
    return {
        "url": endpoint.url,
        "mode": endpoint.mode,
        "enabled_events": list(endpoint.enabled_events),
        "description": endpoint.description,
        "metadata": dict(endpoint.metadata_ or {}),
        "status": endpoint.status,
    }


def _merged_metadata(current: dict[str, str], given: Any) -> dict[str, str]:
    """Stripe's metadata rules, as for PaymentIntents: given keys are set, "" removes a key."""
    from payments.intents import merge_metadata  # (here: intents imports events, which imports this module)

    return merge_metadata(current, given)


def create_endpoint(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    livemode: bool,
    url: Any,
    enabled_events: Any,
    actor: audit.Actor,
    *,
    description: Any = None,
    metadata: Any = None,
    allow_private: bool = False,
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its signing secret (returned once, stored only encrypted)."""
    url = clean_url(url, livemode=livemode, allow_private=allow_private)
    events = clean_events(enabled_events)
    kept = _merged_metadata({}, metadata)
    count = db.session.execute(
        sa.select(sa.func.count())
        .select_from(WebhookEndpoint)
        .where(
            WebhookEndpoint.tenant_id == tenant_id,
            WebhookEndpoint.merchant_id == merchant_id,
            WebhookEndpoint.livemode == livemode,
        )
    ).scalar_one()
    if count >= MAX_ENDPOINTS:
        raise InvalidRequest(
            f"You can have at most {MAX_ENDPOINTS} webhook endpoints per mode; delete one first.",
            code="webhook_endpoint_limit",
        )
    secret = new_secret()
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        id=objects.new_id("we"),
        merchant_id=merchant_id,
        livemode=livemode,
        url=url,
        enabled_events=events,
        description=clean_description(description),
        metadata_=kept,
        secret_encrypted=crypto.encrypt(secret),
        status="enabled",
    )
    db.session.add(endpoint)
    audit.record(
        tenant_id,
        actor,
        "webhook_endpoint.created",
        "webhook_endpoint",
        endpoint.id,
        audit.created(**_audit_fields(endpoint)),
    )
    db.session.commit()
    return endpoint, secret


def update_endpoint(
    endpoint: WebhookEndpoint,
    actor: audit.Actor,
    *,
    url: Any = None,
    enabled_events: Any = None,
    description: Any = None,
    metadata: Any = None,
    disabled: bool | None = None,
    allow_private: bool = False,
) -> WebhookEndpoint:
    """Change what is given (None leaves a field as it is; description "" clears it; metadata is
    merged: given keys are set, a key set to "" is removed, metadata "" removes them all)."""
    row = _locked_endpoint(endpoint.tenant_id, endpoint.id)
    before = _audit_fields(row)
    if url is not None:
        row.url = clean_url(url, livemode=row.livemode, allow_private=allow_private)
    if enabled_events is not None:
        row.enabled_events = clean_events(enabled_events)
    if description is not None:
        row.description = clean_description(description)
    if metadata is not None:
        row.metadata_ = _merged_metadata(row.metadata_ or {}, metadata)
    if disabled is not None:
        row.status = "disabled" if disabled else "enabled"
    diff = audit.changes(before, _audit_fields(row))
    if diff:
        audit.record(row.tenant_id, actor, "webhook_endpoint.updated", "webhook_endpoint", row.id, diff)
    db.session.commit()
    return row


def delete_endpoint(endpoint: WebhookEndpoint, actor: audit.Actor) -> None:
    """Delete the endpoint and its delivery log; attempts still queued find nothing to do."""
    row = _locked_endpoint(endpoint.tenant_id, endpoint.id)
    audit.record(
        row.tenant_id,
        actor,
        "webhook_endpoint.deleted",
        "webhook_endpoint",
        row.id,
        {key: {"before": value} for key, value in _audit_fields(row).items()},
    )
    db.session.delete(row)
    db.session.commit()


def list_endpoints(tenant_id: uuid.UUID, merchant_id: uuid.UUID, livemode: bool | None = None) -> list[WebhookEndpoint]:
    """A merchant's endpoints (of one mode when given), newest first."""
    statement = sa.select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.merchant_id == merchant_id
    )
    if livemode is not None:
        statement = statement.where(WebhookEndpoint.livemode == livemode)
    order = (WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc())
    return list(db.session.execute(statement.order_by(*order)).scalars())


def get_endpoint(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, endpoint_id: str, livemode: bool | None = None
) -> WebhookEndpoint:
    """The merchant's own endpoint (in `livemode` when given); anything else is NotFound."""
    statement = sa.select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id,
        WebhookEndpoint.merchant_id == merchant_id,
        WebhookEndpoint.id == str(endpoint_id),
    )
    if livemode is not None:
        statement = statement.where(WebhookEndpoint.livemode == livemode)
    endpoint = db.session.execute(statement).scalar_one_or_none()
    if endpoint is None:
        raise NotFound("webhook_endpoint", str(endpoint_id))
    return endpoint


def endpoint_object(endpoint: WebhookEndpoint, secret: str | None = None) -> dict[str, Any]:
    """Stripe's `webhook_endpoint` object; `secret` only in the answer that created it."""
    body: dict[str, Any] = {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": None,
        "application": None,
        "created": objects.unix(endpoint.created_at),
        "description": endpoint.description,
        "enabled_events": list(endpoint.enabled_events),
        "livemode": endpoint.livemode,
        "metadata": dict(endpoint.metadata_ or {}),
        "status": endpoint.status,
        "url": endpoint.url,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _locked_endpoint(tenant_id: uuid.UUID, endpoint_id: str) -> WebhookEndpoint:
    endpoint = db.session.execute(
        sa.select(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if endpoint is None:
        db.session.rollback()
        raise NotFound("webhook_endpoint", endpoint_id)
    return endpoint


# --- the delivery log ----------------------------------------------------------------------


def deliveries_query(endpoint: WebhookEndpoint) -> sa.Select:
    """The endpoint's deliveries (for a page of the log, newest first by the caller)."""
    return sa.select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == endpoint.tenant_id, WebhookDelivery.endpoint_id == endpoint.id
    )


def event_types(tenant_id: uuid.UUID, event_ids: list[str]) -> dict[str, str]:
    if not event_ids:
        return {}
    rows = db.session.execute(
        sa.select(Event.id, Event.type).where(Event.tenant_id == tenant_id, Event.id.in_(event_ids))
    ).all()
    return dict(rows)


def get_delivery(endpoint: WebhookEndpoint, delivery_id: Any) -> WebhookDelivery:
    """A delivery of this endpoint; any other id is NotFound."""
    try:
        ident = uuid.UUID(str(delivery_id))
    except ValueError:
        raise NotFound("webhook_delivery", str(delivery_id)) from None
    delivery = db.session.execute(deliveries_query(endpoint).where(WebhookDelivery.id == ident)).scalar_one_or_none()
    if delivery is None:
        raise NotFound("webhook_delivery", str(delivery_id))
    return delivery


def resend(delivery: WebhookDelivery, actor: audit.Actor) -> WebhookDelivery:
    """One more attempt now, whatever the delivery's state (the merchant asked for it).

    A succeeded delivery stays succeeded; a failed one becomes succeeded if this attempt is
    answered with 2xx; a pending one keeps its automatic retries if this attempt fails too.
    """
    row = db.session.execute(
        sa.select(WebhookDelivery)
        .where(WebhookDelivery.tenant_id == delivery.tenant_id, WebhookDelivery.id == delivery.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        db.session.rollback()
        raise NotFound("webhook_delivery", str(delivery.id))
    attempt = row.attempts + 1
    if row.status == "pending":
        row.next_attempt_at = _now()
    audit.record(
        row.tenant_id,
        actor,
        "webhook_delivery.resent",
        "webhook_delivery",
        row.id,
        {"endpoint": {"after": row.endpoint_id}, "event": {"after": row.event_id}, "attempt": {"after": attempt}},
    )
    try:
        _queue_attempt(row.tenant_id, row.id, attempt, manual=True)
    except Exception:
        db.session.rollback()
        raise
    db.session.commit()
    return row


# --- after commit: start dispatching -------------------------------------------------------

_NEW_EVENTS = "payplat.webhooks.tenants_with_new_events"


_LISTENING = "payplat.webhooks.listening"


def _endpoint_changes(session: Session) -> bool:
    return any(isinstance(obj, WebhookEndpoint) for obj in (*session.new, *session.dirty, *session.deleted))


@orm_event.listens_for(Session, "before_flush")
def _forget_listening(session: Session, flush_context, instances) -> None:  # noqa: ARG001
    if _LISTENING in session.info and _endpoint_changes(session):
        session.info.pop(_LISTENING, None)


def route_new_event(
    session: Session, tenant_id: uuid.UUID, merchant_id: uuid.UUID, livemode: bool, type_: str
) -> datetime | None:
    """The `dispatched_at` a new event is written with. An event an enabled endpoint listens to
    waits for `dispatch` (None; queued after the commit); the others, most of them on a platform
    where few merchants use webhooks, are dispatched at once, with nothing to deliver (now).

    Which endpoints listen is read once per session (a request, a job) and merchant, so a
    payment's two transactions read it once; a change to an endpoint in this session forgets it."""
    if _endpoint_changes(session):
        session.flush()
    known: dict[tuple, set[str]] = session.info.setdefault(_LISTENING, {})
    key = (tenant_id, merchant_id, livemode)
    if key not in known:
        endpoints = WebhookEndpoint.__table__.c
        rows = (
            session.connection()
            .execute(
                sa.select(endpoints.livemode, endpoints.enabled_events).where(
                    endpoints.tenant_id == tenant_id,
                    endpoints.merchant_id == merchant_id,
                    endpoints.status == "enabled",
                )
            )
            .all()
        )
        known[(tenant_id, merchant_id, False)] = set()
        known[(tenant_id, merchant_id, True)] = set()
        for mode, enabled in rows:
            known[(tenant_id, merchant_id, mode)].update(enabled)
    types = known[key]
    if ALL_EVENTS in types or type_ in types:
        session.info.setdefault(_NEW_EVENTS, set()).add(tenant_id)
        return None
    return _now()


@orm_event.listens_for(Session, "after_commit")
def _dispatch_after_commit(session: Session) -> None:
    for tenant_id in session.info.pop(_NEW_EVENTS, ()):
        start_dispatch(tenant_id)


@orm_event.listens_for(Session, "after_rollback")
def _forget_new_events(session: Session) -> None:
    session.info.pop(_NEW_EVENTS, None)


def start_dispatch(tenant_id: uuid.UUID) -> None:
    """Queue `dispatch` for a tenant now; best effort (never raises: the sweep is the fallback)."""
    try:
        queue.enqueue(QUEUE, dispatch, str(tenant_id), retry=_retry())
    except Exception:  # noqa: BLE001  (Redis away, no app: the events wait for the sweep)
        log.warning(
            "could not queue webhook dispatch for tenant %s; the sweep will pick it up", tenant_id, exc_info=True
        )


# --- jobs ----------------------------------------------------------------------------------


def dispatch(tenant_id: Any) -> int:
    """Turn the tenant's undispatched events into pending deliveries and queue them (a job).

    Safe to run twice or side by side: events are taken with SKIP LOCKED and marked in the
    transaction that creates their deliveries, and a delivery is unique per endpoint and event.
    Returns how many deliveries it created.
    """
    tenant = uuid.UUID(str(tenant_id))
    created = 0
    with isolation.tenant_context(db.session, tenant):
        try:
            while True:
                batch = _dispatch_batch(tenant)
                if batch is None:
                    break
                created += len(batch)
                for delivery_id in batch:
                    _queue_attempt(tenant, delivery_id, 1)
        except BaseException:
            db.session.rollback()
            raise
    schedule_sweep()
    return created


def _dispatch_batch(tenant_id: uuid.UUID) -> list[uuid.UUID] | None:
    events = (
        db.session.execute(
            sa.select(Event)
            .where(Event.tenant_id == tenant_id, Event.dispatched_at.is_(None))
            .order_by(Event.created_at, Event.id)
            .limit(DISPATCH_BATCH)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    if not events:
        db.session.commit()  # (not a rollback: that would expire a calling test's objects)
        return None
    endpoints = (
        db.session.execute(
            sa.select(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id,
                WebhookEndpoint.merchant_id.in_({ev.merchant_id for ev in events}),
                WebhookEndpoint.status == "enabled",
            )
        )
        .scalars()
        .all()
    )
    now = _now()
    rows = []
    for ev in events:
        for endpoint in endpoints:
            if (
                endpoint.merchant_id == ev.merchant_id
                and endpoint.livemode == ev.livemode
                and endpoint.listens_to(ev.type)
            ):
                rows.append(
                    {
                        "tenant_id": tenant_id,
                        "id": uuid.uuid4(),
                        "endpoint_id": endpoint.id,
                        "event_id": ev.id,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                    }
                )
        ev.dispatched_at = now
    created: list[uuid.UUID] = []
    if rows:
        statement = (
            pg_insert(WebhookDelivery)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["tenant_id", "endpoint_id", "event_id"])
            .returning(WebhookDelivery.id)
        )
        created = list(db.session.execute(statement).scalars())
    db.session.commit()
    return created


def _job_id(delivery_id: Any, attempt: int, manual: bool) -> str:
    return f"webhook-{delivery_id}-{attempt}{'-resend' if manual else ''}"


def _queue_attempt(
    tenant_id: uuid.UUID, delivery_id: Any, attempt: int, *, at: datetime | None = None, manual: bool = False
) -> None:
    """Queue attempt `attempt` of a delivery (at `at`, through RQ's scheduler); its job id is
    deterministic, so queueing the same attempt twice keeps one job."""
    with isolation.tenant_context(db.session, tenant_id):
        queue.enqueue(
            QUEUE,
            deliver,
            str(tenant_id),
            str(delivery_id),
            attempt,
            manual,
            job_id=_job_id(delivery_id, attempt, manual),
            if_absent=True,
            at=at,
            retry=_retry(),
        )


@dataclass(frozen=True)
class Outcome:
    status: int | None
    excerpt: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def retry_delay(attempt: int) -> timedelta:
    """How long after failed attempt `attempt` (1, 2, ...) the next one follows."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]


def deliver(tenant_id: Any, delivery_id: Any, attempt: int | None = None, manual: bool = False) -> str:
    """Make attempt `attempt` (default: the next) of a delivery and record its answer (a job).

    Does nothing when that attempt was already made (a duplicate job), and, unless `manual`
    (a resend), when the delivery is no longer pending: it is never delivered twice as succeeded.
    Returns the delivery's status afterwards ("gone" when it no longer exists, "skipped").
    """
    tenant = uuid.UUID(str(tenant_id))
    ident = uuid.UUID(str(delivery_id))
    with isolation.tenant_context(db.session, tenant):
        try:
            status = _deliver(tenant, ident, attempt, manual)
        except BaseException:
            db.session.rollback()
            raise
        db.session.commit()  # ends what a skipped attempt read (and locked); it changed nothing
        return status


def _locked_delivery(tenant_id: uuid.UUID, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    return db.session.execute(
        sa.select(WebhookDelivery)
        .where(WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id == delivery_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _deliver(tenant_id: uuid.UUID, delivery_id: uuid.UUID, attempt: int | None, manual: bool) -> str:
    # 1. Claim the attempt.
    row = _locked_delivery(tenant_id, delivery_id)
    if row is None:
        return "gone"
    attempt = row.attempts + 1 if attempt is None else attempt
    if row.attempts != attempt - 1 or (row.status != "pending" and not manual):
        return "skipped"
    endpoint = db.session.execute(
        sa.select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == row.endpoint_id)
    ).scalar_one()
    if endpoint.status != "enabled" and not manual:
        row.status, row.next_attempt_at = "failed", None
        row.error = "The endpoint is disabled: nothing was sent. Resend once it is enabled again."
        db.session.commit()
        return row.status
    ev = db.session.execute(sa.select(Event).where(Event.tenant_id == tenant_id, Event.id == row.event_id)).scalar_one()
    started = _now()
    retry_at = started + retry_delay(attempt)
    row.attempts = attempt
    row.last_attempt_at = started
    if row.status == "pending":
        # Should this attempt never report back (a worker died), the sweep takes it up from here.
        row.next_attempt_at = retry_at
    url = endpoint.url
    secret = Secret(crypto.decrypt(endpoint.secret_encrypted))
    payload = json.dumps(objects.event(ev), separators=(",", ":")).encode()
    db.session.commit()

    # 2. Send, with no transaction open.
    outcome = send(url, payload, secret)

    # 3. Record the answer.
    row = _locked_delivery(tenant_id, delivery_id)
    if row is None:
        return "gone"
    latest = row.attempts == attempt
    if latest:
        row.response_status, row.response_body_excerpt, row.error = outcome.status, outcome.excerpt, outcome.error
    next_at = None
    if outcome.ok:
        if row.status != "succeeded":
            row.status, row.delivered_at = "succeeded", _now()
        row.next_attempt_at = None
    elif row.status == "pending" and latest:
        if retry_at > row.created_at + GIVE_UP_AFTER:
            row.status, row.next_attempt_at = "failed", None
        else:
            row.next_attempt_at = next_at = retry_at
    status = row.status
    db.session.commit()
    if not outcome.ok:
        metrics.count_webhook_failure(answered=outcome.status is not None)
    if next_at is not None:
        _queue_attempt(tenant_id, delivery_id, attempt + 1, at=next_at)
    log.info("webhook delivery %s attempt %s: %s", delivery_id, attempt, outcome.status or outcome.error)
    return status


def send(url: str, payload: bytes, secret: Secret, *, allow_private: bool | None = None) -> Outcome:
    """POST `payload` to `url`, signed as Stripe signs webhooks; never raises."""
    allow = _allow_private_destinations if allow_private is None else allow_private
    if not allow:
        try:
            check_destination(urlsplit(url).hostname or "")
        except UnsafeDestination as exc:
            return Outcome(None, None, f"Refused: {exc}.")
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_payload(secret, payload, int(time.time())),
        "User-Agent": "Payplat-Webhooks/1.0",
    }
    try:
        status, excerpt = _post(url, payload, headers)
    except TimeoutError:
        return Outcome(None, None, f"No answer within {TOTAL_TIMEOUT:.0f} seconds.")
    except httpx.TimeoutException:
        return Outcome(None, None, f"Timed out ({CONNECT_TIMEOUT:.0f} s to connect, {TOTAL_TIMEOUT:.0f} s in all).")
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        return Outcome(None, None, _text(f"Could not connect: {type(exc).__name__} {exc}", ERROR_CHARS))
    return Outcome(status, _text(excerpt, EXCERPT_CHARS), None if 200 <= status < 300 else f"HTTP {status}")


def _text(value: str, limit: int) -> str:
    """Storable text: PostgreSQL refuses NUL characters, and the columns have a length."""
    return value.replace("\x00", "")[:limit]


def _post(url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST and read at most the excerpt, within TOTAL_TIMEOUT in all (checked between chunks;
    each read is itself bounded, so a trickling receiver cannot hold the worker for long)."""
    deadline = time.monotonic() + TOTAL_TIMEOUT
    timeout = httpx.Timeout(TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT)
    with (
        httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
        client.stream("POST", url, content=payload, headers=headers) as response,
    ):
        body = bytearray()
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) >= EXCERPT_CHARS * 4:  # enough for the excerpt: stop reading
                break
            if time.monotonic() > deadline:
                raise TimeoutError
        return response.status_code, body.decode("utf-8", "replace")[:EXCERPT_CHARS]


# --- the sweep -----------------------------------------------------------------------------


def schedule_sweep(after: int | None = None) -> None:
    """Make sure the next minute's sweep is scheduled (one job per minute, whoever asks)."""
    queue.schedule_next(
        QUEUE,
        sweep,
        SWEEP_INTERVAL,
        "webhooks-sweep",
        after=after,
        scope=lambda: isolation.platform_scope(db.session),
    )


@sweeps.recorded("webhooks", "Webhook deliveries and channel outcomes", SWEEP_INTERVAL)
def sweep(slot: int | None = None) -> dict[str, int]:
    """Re-queue what was left behind, over all tenants (platform scope; a job every minute,
    `slot` being the minute it was scheduled for).

    Events undispatched for over a minute get a `dispatch` of their tenant; pending deliveries
    overdue by over a minute get their next attempt queued (kept if it is still queued).
    """
    schedule_sweep(after=slot)  # first, so that a failure below does not stop the sweeps
    cutoff = _now() - SWEEP_GRACE
    with isolation.platform_scope(db.session):
        try:
            tenants = (
                db.session.execute(
                    sa.select(Event.tenant_id)
                    .where(Event.dispatched_at.is_(None), Event.created_at < cutoff)
                    .distinct()
                )
                .scalars()
                .all()
            )
            overdue = db.session.execute(
                sa.select(WebhookDelivery.tenant_id, WebhookDelivery.id, WebhookDelivery.attempts)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at < cutoff)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(SWEEP_LIMIT)
            ).all()
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
    slot = int(time.time()) // SWEEP_INTERVAL * SWEEP_INTERVAL
    for tenant_id in tenants:
        with isolation.tenant_context(db.session, tenant_id):
            queue.enqueue(
                QUEUE,
                dispatch,
                str(tenant_id),
                job_id=f"webhooks-dispatch-{tenant_id}-{slot}",
                if_absent=True,
                retry=_retry(),
            )
    for tenant_id, delivery_id, attempts in overdue:
        _queue_attempt(tenant_id, delivery_id, attempts + 1)
    if tenants or overdue:
        log.info("webhook sweep: %d tenant(s) to dispatch, %d overdue deliveries", len(tenants), len(overdue))
    # The same per-minute job also looks after channel outcomes still unknown (payments.jobs).
    from payments.jobs import sweep_unknown_attempts

    attempts = sweep_unknown_attempts()
    return {"tenants": len(tenants), "deliveries": len(overdue), "attempts": attempts}
