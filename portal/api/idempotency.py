"""`Idempotency-Key` for the merchant API's POST requests, safe under concurrency.

A key is claimed before the request runs: `INSERT ... ON CONFLICT DO NOTHING` of an
`in_progress` row, committed, so of concurrent requests with one key exactly one runs (the
others wait on the unique index for the claim's commit, then see the row). The row keeps a
fingerprint of the request (SHA-256 of method, path and the canonical, typed parameters, so
the same parameters form- or JSON-encoded are the same request):

- same fingerprint, done: the stored status and body are replayed (`Idempotent-Replayed: true`);
- same fingerprint, in progress: 409 `idempotency_key_in_use` (Stripe's SDKs retry a 409);
- another fingerprint: 400 `idempotency_error`.

After the request: its answer is stored, error answers included, except 409, 429 and 5xx; for
those the row is deleted, so a retry with the key runs again. As at Stripe, a request refused
before it ran (unknown or ill-typed parameters, no key) stores nothing. Keys live 24 hours: an
older row counts as absent and is replaced (a scheduled cleanup that deletes old rows is a
later job).

An answer that carries a secret shown once (a new webhook endpoint's `secret`) is stored with that
secret encrypted (`core.crypto`), as the endpoint itself keeps it, and decrypted for the replay.

A process that dies while a request runs leaves its row `in_progress`: retries get 409 until
the row is 24 hours old. Nothing is ever run twice for a key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from core import crypto
from core.db import db
from payments.intents import MerchantContext
from payments.models import IdempotencyKey
from portal.api.errors import ApiError, error_body

LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 255
NOT_STORED = (409, 429)

Answer = tuple[int, dict[str, Any], dict[str, str]]


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()}\n{path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> str:
    if not key.strip():
        raise ApiError("The Idempotency-Key header is empty; send a unique key or leave the header out.")
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


def _claim(ctx: MerchantContext, key: str, print_: str) -> uuid.UUID | None:
    row_id = db.session.execute(
        pg_insert(IdempotencyKey)
        .values(
            tenant_id=ctx.tenant_id,
            id=uuid.uuid4(),
            merchant_id=ctx.merchant_id,
            livemode=ctx.livemode,
            key=key,
            request_fingerprint=print_,
            status="in_progress",
        )
        .on_conflict_do_nothing(constraint="uq_idempotency_keys_key")
        .returning(IdempotencyKey.id)
    ).scalar_one_or_none()
    db.session.commit()
    return row_id


def _existing(ctx: MerchantContext, key: str):
    expired = IdempotencyKey.created_at < sa.func.now() - LIFETIME
    row = db.session.execute(
        sa.select(
            IdempotencyKey.id,
            IdempotencyKey.request_fingerprint,
            IdempotencyKey.status,
            IdempotencyKey.response_status,
            IdempotencyKey.response_body,
            expired.label("expired"),
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


def _store(ctx: MerchantContext, row_id: uuid.UUID, status: int, body: dict[str, Any]) -> None:
    db.session.execute(
        sa.update(IdempotencyKey)
        .where(IdempotencyKey.tenant_id == ctx.tenant_id, IdempotencyKey.id == row_id)
        .values(status="done", response_status=status, response_body=_sealed(body))
    )
    db.session.commit()


def run(ctx: MerchantContext, key: str, print_: str, call: Callable[[], tuple[int, dict[str, Any]]]) -> Answer:
    """Run `call` once for this merchant's `key` and fingerprint, or answer as the key's first request did."""
    row_id = None
    for _ in range(3):
        row_id = _claim(ctx, key, print_)
        if row_id is not None:
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
        error = _in_use(key)
        return error.http_status, error_body(error), {}
    if row_id is None:
        error = _in_use(key)
        return error.http_status, error_body(error), {}
    try:
        status, body = call()
    except BaseException:
        db.session.rollback()
        _forget(ctx, row_id)
        raise
    if status >= 500 or status in NOT_STORED:
        _forget(ctx, row_id)
    else:
        _store(ctx, row_id, status, body)
    return status, body, {}
