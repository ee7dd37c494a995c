"""`Idempotency-Key` for the merchant API's POST requests, safe under concurrency and when a
process dies mid-request.

A key is claimed before the request runs: `INSERT ... ON CONFLICT DO NOTHING` of an
`in_progress` row with `locked_at = now()` (the claim's lease), committed, so of concurrent
requests with one key exactly one runs (the others wait on the unique index for the claim's
commit, then see the row). The row keeps a fingerprint of the request (SHA-256 of method, path
and the canonical, typed parameters, so the same parameters form- or JSON-encoded are the same
request):

- same fingerprint, done: the stored status and body are replayed (`Idempotent-Replayed: true`);
- same fingerprint, in progress, lease running: 409 `idempotency_key_in_use` (Stripe's SDKs retry a 409);
- same fingerprint, in progress, lease over: the request's process died (see below);
- another fingerprint: 400 `idempotency_error`.

After the request: its answer is stored, error answers included, except 409, 429 and 5xx; for
those the key is released, so a retry with it runs again (or, when the request had already
committed its object, answers with that object, as below). As at Stripe, a request refused
before it ran (unknown or ill-typed parameters, no key) stores nothing. Keys live 24 hours: an
older row counts as absent and is replaced (a scheduled cleanup that deletes old rows is a
later job).

An answer that carries a secret shown once (a new webhook endpoint's `secret`) is stored with that
secret encrypted (`core.crypto`), as the endpoint itself keeps it, and decrypted for the replay.

Recovery when the process dies. The lease (`PAYPLAT_IDEMPOTENCY_LEASE_SECONDS`, default 300 s)
is longer than a request runs: a channel call is bounded by the adapter's timeouts (Stripe: 3 s
to connect and 20 s to read by default, at most 30 + 120 s as a tenant may set them; the
sandbox's simulated latency and slowness at most 30 + 60 s), and a failover to the next channel
follows only a quick refusal. (A request that outlives its lease anyway stays safe, below.)
While the request runs, a session hook (`after_flush`) writes the key's recovery point,
`object_id`, in the request's own transaction: the object the request acts on (named in its
URL) with its first write of anything, or the new object of the kind the operation returns (a
PaymentIntent, a refund, a top-up, ...) with the write that inserts it. So there is no moment at
which the object is committed and the key does not know it: a crash before that commit leaves
neither, a crash after it leaves both. A retry after the lease is over then:

- with a recovery point: answers with the object's current state, as a retrieve would (200, or
  404 if it is gone), and stores that answer; nothing runs again. (A webhook endpoint recovered
  so carries no `secret`, which only the lost answer had: delete it and create another.)
- without one: nothing of the request was committed, so it runs, under a new lease.

Nothing runs twice even when the lease is too short for a request that is alive: the hook's
write is conditional on the claim's own `locked_at`, so a request whose key was taken over by a
retry fails at its first write (409, everything rolled back) instead of committing a second
object. Once the recovery point is committed, a slow request carries on (its outcome is
applied once, by the state checks of the use cases), and a retry answers with the object as it
is then. A request that ends with a 5xx (or 409, 429) after committing its object keeps the key
with the lease released, so the retry answers with the object at once rather than creating
another.

Every POST writes its object in its first transaction that writes anything (the operations
table's `recovery_for` tells which object); a new operation must keep that true.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import event as orm_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core import crypto
from core.db import db
from payments.errors import PaymentError
from payments.intents import MerchantContext
from payments.models import IdempotencyKey
from portal.api.errors import ApiError, error_body
from portal.api.params import unstorable

LIFETIME = timedelta(hours=24)
LEASE_SECONDS = 300  # default of PAYPLAT_IDEMPOTENCY_LEASE_SECONDS
MAX_KEY_LENGTH = 255
NOT_STORED = (409, 429)

Answer = tuple[int, dict[str, Any], dict[str, str]]


@dataclass(frozen=True)
class Recovery:
    """What a POST creates or acts on, so that a retry after its process died can answer with it."""

    model: type  # the object's model: PaymentIntent, Refund, Topup, ...
    retrieve: Callable[[MerchantContext, str], dict[str, Any]]  # the object as a retrieve answers it
    object_id: str | None = None  # the object named in the URL, for a request that acts on one


def lease() -> timedelta:
    """How long a claim holds its key before a retry may take over (`IDEMPOTENCY_LEASE_SECONDS`,
    or `PAYPLAT_IDEMPOTENCY_LEASE_SECONDS`)."""
    value = current_app.config.get("IDEMPOTENCY_LEASE_SECONDS", os.environ.get("PAYPLAT_IDEMPOTENCY_LEASE_SECONDS"))
    return timedelta(seconds=int(value) if value not in (None, "") else LEASE_SECONDS)


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> str:
    if not key.strip():
        raise ApiError("The Idempotency-Key header is empty; send a unique key or leave the header out.")
    problem = unstorable(key)
    if problem:
        raise ApiError(f"The Idempotency-Key header {problem}.")
    if len(key) > MAX_KEY_LENGTH:
        raise ApiError(
            f"Idempotency key length is {len(key)} characters, which exceeds the maximum of {MAX_KEY_LENGTH}.",
            type_="idempotency_error",
        )
    return key


def _in_use(key: str) -> ApiError:
    return ApiError(
        "There is currently another in-progress request using this Idempotency-Key (that probably means "
        f"the same request was sent twice, and the other one is still going through): {key}. Try again later.",
        type_="idempotency_error",
        code="idempotency_key_in_use",
        http_status=409,
    )


def _reused(key: str) -> ApiError:
    return ApiError(
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        f"Try using a key other than '{key}' if you meant to execute a different request.",
        type_="idempotency_error",
    )


def _scope(ctx: MerchantContext, key: str):
    return (
        IdempotencyKey.tenant_id == ctx.tenant_id,
        IdempotencyKey.merchant_id == ctx.merchant_id,
        IdempotencyKey.livemode == ctx.livemode,
        IdempotencyKey.key == key,
    )


def _lease_over():
    return sa.or_(IdempotencyKey.locked_at.is_(None), IdempotencyKey.locked_at < sa.func.now() - lease())


def _claim(ctx: MerchantContext, key: str, print_: str) -> tuple[uuid.UUID, datetime] | None:
    """The new row's id and lease start, or None when the key has a row already."""
    row = db.session.execute(
        pg_insert(IdempotencyKey)
        .values(
            tenant_id=ctx.tenant_id,
            id=uuid.uuid4(),
            merchant_id=ctx.merchant_id,
            livemode=ctx.livemode,
            key=key,
            request_fingerprint=print_,
            status="in_progress",
            locked_at=sa.func.now(),
        )
        .on_conflict_do_nothing(constraint="uq_idempotency_keys_key")
        .returning(IdempotencyKey.id, IdempotencyKey.locked_at)
    ).one_or_none()
    db.session.commit()
    return None if row is None else (row.id, row.locked_at)


def _take_over(ctx: MerchantContext, row_id: uuid.UUID) -> tuple[uuid.UUID, datetime] | None:
    """A new lease on a key whose request died having committed nothing (None: someone else was first)."""
    row = db.session.execute(
        sa.update(IdempotencyKey)
        .where(
            IdempotencyKey.tenant_id == ctx.tenant_id,
            IdempotencyKey.id == row_id,
            IdempotencyKey.status == "in_progress",
            IdempotencyKey.object_id.is_(None),
            _lease_over(),
        )
        .values(locked_at=sa.func.now())
        .returning(IdempotencyKey.id, IdempotencyKey.locked_at)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    db.session.commit()
    return None if row is None else (row.id, row.locked_at)


def _existing(ctx: MerchantContext, key: str):
    expired = IdempotencyKey.created_at < sa.func.now() - LIFETIME
    row = db.session.execute(
        sa.select(
            IdempotencyKey.id,
            IdempotencyKey.request_fingerprint,
            IdempotencyKey.status,
            IdempotencyKey.response_status,
            IdempotencyKey.response_body,
            IdempotencyKey.object_id,
            expired.label("expired"),
            _lease_over().label("lease_over"),
        ).where(*_scope(ctx, key))
    ).one_or_none()
    db.session.commit()
    return row


def _forget(ctx: MerchantContext, row_id: uuid.UUID, *conditions) -> None:
    db.session.execute(
        sa.delete(IdempotencyKey).where(
            IdempotencyKey.tenant_id == ctx.tenant_id, IdempotencyKey.id == row_id, *conditions
        )
    )
    db.session.commit()


def _release(ctx: MerchantContext, row_id: uuid.UUID, token: datetime) -> None:
    """End our claim without an answer: delete the row if the request committed no object, else
    keep it with the lease released, so that a retry answers with that object."""
    mine = (
        IdempotencyKey.tenant_id == ctx.tenant_id,
        IdempotencyKey.id == row_id,
        IdempotencyKey.status == "in_progress",
        IdempotencyKey.locked_at == token,
    )
    db.session.execute(sa.delete(IdempotencyKey).where(*mine, IdempotencyKey.object_id.is_(None)))
    db.session.execute(
        sa.update(IdempotencyKey)
        .where(*mine, IdempotencyKey.object_id.is_not(None))
        .values(locked_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


SECRET_FIELD = "secret"
SEALED = "encrypted"


def _sealed(body: dict[str, Any]) -> dict[str, Any]:
    """The body as stored: a top-level secret (shown once) is encrypted at rest."""
    if isinstance(body.get(SECRET_FIELD), str):
        return {**body, SECRET_FIELD: {SEALED: crypto.encrypt(body[SECRET_FIELD])}}
    return body


def _opened(body: dict[str, Any]) -> dict[str, Any]:
    sealed = body.get(SECRET_FIELD) if isinstance(body, dict) else None
    if isinstance(sealed, dict) and isinstance(sealed.get(SEALED), str):
        return {**body, SECRET_FIELD: crypto.decrypt(sealed[SEALED])}
    return body


def _store(ctx: MerchantContext, row_id: uuid.UUID, status: int, body: dict[str, Any], *conditions) -> bool:
    """Keep the answer on a row still in progress (and meeting `conditions`); False if it was not."""
    stored = db.session.execute(
        sa.update(IdempotencyKey)
        .where(
            IdempotencyKey.tenant_id == ctx.tenant_id,
            IdempotencyKey.id == row_id,
            IdempotencyKey.status == "in_progress",
            *conditions,
        )
        .values(status="done", response_status=status, response_body=_sealed(body))
        .returning(IdempotencyKey.id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    db.session.commit()
    return stored is not None


def _recover(ctx: MerchantContext, row, recovery: Recovery) -> Answer | None:
    """Answer for a request that died after committing its object: the object as it is now,
    stored as the key's answer (None: another retry stored its answer first)."""
    try:
        status, body = 200, recovery.retrieve(ctx, row.object_id)
    except PaymentError as exc:
        db.session.rollback()
        status, body = exc.http_status, error_body(exc)
    if not _store(ctx, row.id, status, body, IdempotencyKey.object_id == row.object_id):
        return None
    return status, body, {}


def run(
    ctx: MerchantContext,
    key: str,
    print_: str,
    call: Callable[[], tuple[int, dict[str, Any]]],
    recovery: Recovery | None = None,
) -> Answer:
    """Run `call` once for this merchant's `key` and fingerprint, or answer as the key's first request
    did; `recovery` says what the request creates or acts on (without it a dead request's key is
    only taken over when it committed nothing)."""
    claim = None
    for _ in range(3):
        claim = _claim(ctx, key, print_)
        if claim is not None:
            break
        row = _existing(ctx, key)
        if row is None:
            continue  # its request failed and released the key meanwhile: claim it
        if row.expired:
            _forget(ctx, row.id, IdempotencyKey.created_at < sa.func.now() - LIFETIME)
            continue
        if row.request_fingerprint != print_:
            error = _reused(key)
            return error.http_status, error_body(error), {}
        if row.status == "done":
            return row.response_status, _opened(row.response_body), {"Idempotent-Replayed": "true"}
        if not row.lease_over or (row.object_id is not None and recovery is None):
            error = _in_use(key)
            return error.http_status, error_body(error), {}
        if row.object_id is not None:
            answer = _recover(ctx, row, recovery)
            if answer is not None:
                return answer
            continue  # another retry answered first: replay its answer
        claim = _take_over(ctx, row.id)
        if claim is not None:
            break
    if claim is None:
        error = _in_use(key)
        return error.http_status, error_body(error), {}
    row_id, token = claim
    state = _Claim(db.session(), ctx, key, row_id, token, recovery)
    reset = _CLAIM.set(state)
    try:
        status, body = call()
    except BaseException:
        db.session.rollback()
        _CLAIM.reset(reset)
        _release(ctx, row_id, token)
        raise
    _CLAIM.reset(reset)
    if status >= 500 or status in NOT_STORED:
        _release(ctx, row_id, token)
    else:
        _store(ctx, row_id, status, body, IdempotencyKey.locked_at == token)
    return status, body, {}


# --- the recovery point, written with the request's first write ----------------------------------


@dataclass
class _Claim:
    session: Session
    ctx: MerchantContext
    key: str
    row_id: uuid.UUID
    token: datetime  # the claim's locked_at: a retry that took the key over has another
    recovery: Recovery | None
    written: bool = False  # the recovery point is in the open transaction
    committed: bool = False  # ... and committed: nothing more to do


_CLAIM: ContextVar[_Claim | None] = ContextVar("payplat_idempotency_claim", default=None)


def _object_written(session: Session, claim: _Claim) -> str | None:
    recovery = claim.recovery
    if recovery is None:
        return None
    if recovery.object_id is not None:
        return recovery.object_id
    for obj in session.new:
        if (
            isinstance(obj, recovery.model)
            and obj.tenant_id == claim.ctx.tenant_id
            and obj.merchant_id == claim.ctx.merchant_id
        ):
            return obj.id
    return None


@orm_event.listens_for(Session, "after_flush")
def _write_recovery_point(session: Session, flush_context) -> None:  # noqa: ARG001
    """In the transaction of each write of a request holding a key, until the recovery point is
    committed: check that the claim is still ours (else refuse the write: a retry took the key
    over) and record the request's object once it is among the writes."""
    claim = _CLAIM.get()
    if claim is None or claim.session is not session or claim.committed:
        return
    object_id = _object_written(session, claim)
    keys = IdempotencyKey.__table__
    statement = (
        sa.update(keys)
        .where(
            keys.c.tenant_id == claim.ctx.tenant_id,
            keys.c.id == claim.row_id,
            keys.c.status == "in_progress",
            keys.c.locked_at == claim.token,
        )
        .returning(keys.c.id)
    )
    if object_id is None:
        statement = statement.values(locked_at=keys.c.locked_at)  # (only locks the row until the commit)
    else:
        statement = statement.values(object_id=sa.func.coalesce(keys.c.object_id, object_id))
    if session.connection().execute(statement).one_or_none() is None:
        raise _in_use(claim.key)
    if object_id is not None:
        claim.written = True


@orm_event.listens_for(Session, "after_commit")
def _recovery_point_committed(session: Session) -> None:
    claim = _CLAIM.get()
    if claim is not None and claim.session is session and claim.written:
        claim.committed = True


@orm_event.listens_for(Session, "after_rollback")
def _recovery_point_rolled_back(session: Session) -> None:
    claim = _CLAIM.get()
    if claim is not None and claim.session is session:
        claim.written = False
