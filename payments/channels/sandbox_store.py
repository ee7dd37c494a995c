"""The sandbox channel's memory, in Redis: what the simulated channel has done, seen by every process.

The web process charges (or pays out) and the RQ worker asks about it later (`query(idempotency_key=...)`
or `query_payout(idempotency_key=...)` after a timeout), so the sandbox keeps its state where both look: the
app's Redis (`REDIS_URL`), as a real channel keeps it on its own servers. The portal connects `STORE` to the
app's Redis at start-up (`configure`); tests and scripts may give a `SandboxStore` a connection of their own.
Every key belongs to one channel account and expires `RETENTION_SECONDS` after its last write, so Redis does
not grow for ever.

| key (`{account}` is a hash tag: one account's keys live together) | value                             |
| ----------------------------------------------------------------- | --------------------------------- |
| `sandbox:{account}:answer:<operation>:<idempotency key>`          | `pending:<token>` while the first |
|                                                                   | call runs, then its answer (JSON) |
| `sandbox:{account}:charge:<reference>`                            | the charge (JSON)                 |
| `sandbox:{account}:charge-key:<idempotency key>`                  | the reference charged by that key |
| `sandbox:{account}:charges`                                       | references by creation time       |
| `sandbox:{account}:contract:<reference>`                          | a signed contract (JSON)          |
| `sandbox:{account}:payout:<reference>`                            | a payout (JSON)                   |
| `sandbox:{account}:payout-key:<idempotency key>`                  | the payout made with that key     |
| `sandbox:{account}:statement:<YYYY-MM-DD>`                        | the day's lines (JSON) by time    |

Idempotency per (account, operation, key): the first caller claims the key (one script: `GET`, else
`SET ... EX`), so exactly one caller does the work; the others poll until its answer is there. The
answer is written by one script together with everything the operation changed, and only if what the
operation read (the charge a refund draws on) is unchanged since: otherwise the operation is worked out
again on the fresh state. A call refused before anything was recorded releases its claim, leaving the key
free. A claim expires after `CLAIM_SECONDS`, so a process that died mid-call does not block its key.

Redis is the sandbox's network: when it cannot be reached before a key is claimed, nothing was done
(`ChannelUnavailable`); once claimed, the outcome is unknown (`ChannelTimeout`), as with a real channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from core import redis as shared_redis
from payments.channels.base import ChannelError, ChannelInvalidRequest, ChannelTimeout, ChannelUnavailable

RETENTION_SECONDS = 7 * 24 * 3600
# Longer than the slowest call the settings allow (slow_ms 60 s plus latency_ms 30 s), with room to spare.
CLAIM_SECONDS = 300
POLL_FIRST_SECONDS = 0.002
POLL_MAX_SECONDS = 0.05
PENDING = "pending:"

# Scripts are given as bytes: their digest then needs no client, and one Script serves every connection.
_CLAIM = Script(
    None,
    b"""
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
""",
)
_RELEASE = Script(
    None,
    b"""
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
""",
)
# ARGV[1]: {"claim": token (KEYS[1] is then the answer key), "answer": text, "expect": [[i, value] or [i] for
# absent], "put": [[i, value]], "add": [[i, score, member]]}; ARGV[2]: seconds to keep what is written.
_COMMIT = Script(
    None,
    b"""
local plan = cjson.decode(ARGV[1])
local ttl = ARGV[2]
if plan.claim and redis.call('GET', KEYS[1]) ~= plan.claim then return 'lost' end
for _, e in ipairs(plan.expect) do
  if redis.call('GET', KEYS[e[1]]) ~= (e[2] or false) then return 'changed' end
end
for _, p in ipairs(plan.put) do redis.call('SET', KEYS[p[1]], p[2], 'EX', ttl) end
for _, a in ipairs(plan.add) do
  redis.call('ZADD', KEYS[a[1]], a[2], a[3])
  redis.call('EXPIRE', KEYS[a[1]], ttl)
end
if plan.claim then redis.call('SET', KEYS[1], plan.answer, 'EX', ttl) end
return 'ok'
""",
)


def key(account: str, *parts: str) -> str:
    return ":".join(("sandbox", "{" + account + "}", *parts))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _dumps(record: Any) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True, default=str)


def _digest(fingerprint: Any) -> str:
    return hashlib.sha256(_dumps(fingerprint).encode()).hexdigest()


@dataclass
class Outcome:
    """What an operation answers (JSON-able: every later call with its key gets the same), and an error
    raised to this first caller only (a timeout: the channel did the work but the caller never heard)."""

    answer: dict[str, Any]
    first: ChannelError | None = None


@dataclass
class Change:
    """What one operation reads and writes at the channel. Reads are remembered: the writes happen all at
    once, and only if nothing read has changed in between."""

    redis: Redis
    account: str
    seen: dict[str, str | None] = field(default_factory=dict)
    puts: dict[str, str] = field(default_factory=dict)
    adds: list[tuple[str, str, str]] = field(default_factory=list)

    def charge(self, reference: str) -> dict[str, Any] | None:
        name = key(self.account, "charge", reference)
        value = _text(self.redis.get(name))
        self.seen[name] = value
        return json.loads(value) if value is not None else None

    def put_charge(self, record: dict[str, Any], *, new: bool = False) -> None:
        reference = record["reference"]
        self.puts[key(self.account, "charge", reference)] = _dumps(record)
        if new:
            self.puts[key(self.account, "charge-key", record["idempotency_key"])] = reference
            created = datetime.fromisoformat(record["created"]).timestamp()
            self.adds.append((key(self.account, "charges"), repr(created), reference))

    def put_contract(self, record: dict[str, Any]) -> None:
        self.puts[key(self.account, "contract", record["reference"])] = _dumps(record)

    def put_payout(self, record: dict[str, Any]) -> None:
        """A new payout, found later by its reference and by the idempotency key it was made with."""
        reference = record["reference"]
        self.puts[key(self.account, "payout", reference)] = _dumps(record)
        self.puts[key(self.account, "payout-key", record["idempotency_key"])] = reference

    def add_line(self, line: dict[str, Any], occurred_at: datetime) -> None:
        """A movement on the statement of `occurred_at`'s day."""
        day = key(self.account, "statement", occurred_at.date().isoformat())
        self.adds.append((day, repr(occurred_at.timestamp()), _dumps(line)))


class SandboxStore:
    """The sandbox's state in Redis (see the module's docstring). Thread- and process-safe."""

    def __init__(self, redis: Redis | None = None):
        self._given = redis

    @property
    def redis(self) -> Redis:
        # The app's Redis (`core.redis`, set when the app is created) unless one was given.
        return self._given if self._given is not None else shared_redis.connection()

    # --- idempotent operations ---

    def once(
        self,
        account: str,
        operation: str,
        idempotency_key: str,
        fingerprint: Any,
        work: Callable[[Change], Outcome],
        *,
        channel: str,
        arrive: Callable[[], None] = lambda: None,
    ) -> tuple[dict[str, Any], ChannelError | None]:
        """Run `work` once per (account, operation, key): (the answer, an error for this caller only).

        Later and concurrent callers with the same parameters get the first answer; other parameters are
        refused. `arrive` runs once when this caller's request reaches the channel (the simulated network).
        """
        redis = self.redis
        answer_key = key(account, "answer", operation, idempotency_key)
        digest = _digest(fingerprint)
        while True:
            token = PENDING + uuid.uuid4().hex
            try:
                done = self._claim(redis, answer_key, token)
            except RedisError as exc:
                raise ChannelUnavailable(
                    f"channel {channel} could not be reached ({type(exc).__name__}); nothing was done",
                    channel=channel,
                ) from exc
            if done is not None:
                if done["fingerprint"] != digest:
                    raise ChannelInvalidRequest(
                        f"channel {channel}: idempotency key {idempotency_key!r} was already used for a {operation} "
                        "with other parameters",
                        channel=channel,
                        code="idempotency_key_reused",
                    )
                return done["answer"], None
            try:
                arrive()
                while True:
                    change = Change(redis, account)
                    outcome = work(change)
                    answer = _dumps({"fingerprint": digest, "answer": outcome.answer})
                    status = self._commit(redis, change, claim=(answer_key, token), answer=answer)
                    if status != "changed":
                        break
            except RedisError as exc:
                with contextlib.suppress(RedisError):
                    _RELEASE(keys=[answer_key], args=[token], client=redis)
                raise ChannelTimeout(
                    f"channel {channel} stopped answering ({type(exc).__name__}); the outcome is unknown until queried",
                    channel=channel,
                    idempotency_key=idempotency_key,
                ) from exc
            except BaseException:
                # Nothing was recorded at the channel, so the key is free for a retry.
                _RELEASE(keys=[answer_key], args=[token], client=redis)
                raise
            if status == "ok":
                return outcome.answer, outcome.first
            # 'lost': the claim expired while this call ran and nothing of it was written; start again.

    def _claim(self, redis: Redis, answer_key: str, token: str) -> dict[str, Any] | None:
        """None once this caller holds the key; the first caller's record once it has answered."""
        wait = POLL_FIRST_SECONDS
        while True:
            current = _text(_CLAIM(keys=[answer_key], args=[token, CLAIM_SECONDS], client=redis))
            if current is None:
                return None
            if not current.startswith(PENDING):
                return json.loads(current)
            # Another caller is inside the channel with this key: wait for its answer (or for its claim to lapse).
            time.sleep(wait)
            wait = min(wait * 2, POLL_MAX_SECONDS)

    def update(self, account: str, work: Callable[[Change], Any]) -> Any:
        """Change state without an idempotency key (the payer paying): `work` again until nothing it read
        changed meanwhile."""
        redis = self.redis
        while True:
            change = Change(redis, account)
            result = work(change)
            if self._commit(redis, change) == "ok":
                return result

    @staticmethod
    def _commit(redis: Redis, change: Change, *, claim: tuple[str, str] | None = None, answer: str = "") -> str:
        keys: list[str] = []

        def index(name: str) -> int:
            keys.append(name)
            return len(keys)

        plan: dict[str, Any] = {}
        if claim is not None:
            index(claim[0])
            plan.update(claim=claim[1], answer=answer)
        plan["expect"] = [[index(k)] if v is None else [index(k), v] for k, v in change.seen.items()]
        plan["put"] = [[index(k), v] for k, v in change.puts.items()]
        plan["add"] = [[index(k), score, member] for k, score, member in change.adds]
        return _text(_COMMIT(keys=keys, args=[_dumps(plan), RETENTION_SECONDS], client=redis))

    # --- reading ---

    def _record(self, name: str) -> dict[str, Any] | None:
        value = _text(self.redis.get(name))
        return json.loads(value) if value is not None else None

    def charge(self, account: str, reference: str) -> dict[str, Any] | None:
        return self._record(key(account, "charge", reference))

    def charge_for_key(self, account: str, idempotency_key: str) -> dict[str, Any] | None:
        reference = _text(self.redis.get(key(account, "charge-key", idempotency_key)))
        return None if reference is None else self.charge(account, reference)

    def contract(self, account: str, reference: str) -> dict[str, Any] | None:
        return self._record(key(account, "contract", reference))

    def payout(self, account: str, reference: str) -> dict[str, Any] | None:
        return self._record(key(account, "payout", reference))

    def payout_for_key(self, account: str, idempotency_key: str) -> dict[str, Any] | None:
        reference = _text(self.redis.get(key(account, "payout-key", idempotency_key)))
        return None if reference is None else self.payout(account, reference)

    def statement(self, account: str, day: date) -> list[dict[str, Any]]:
        return [json.loads(_text(m)) for m in self.redis.zrange(key(account, "statement", day.isoformat()), 0, -1)]

    def charge_references(self, account: str) -> list[str]:
        """The account's charges, oldest first."""
        return [_text(m) for m in self.redis.zrange(key(account, "charges"), 0, -1)]

    def forget_charge(self, account: str, idempotency_key: str) -> bool:
        """The channel loses a charge it took (to test what happens when a channel says it never got one)."""
        redis = self.redis
        charge = self.charge_for_key(account, idempotency_key)
        if charge is None:
            return False
        reference = charge["reference"]
        pipe = redis.pipeline()
        pipe.delete(
            key(account, "charge", reference),
            key(account, "charge-key", idempotency_key),
            key(account, "answer", "charge", idempotency_key),
        )
        pipe.zrem(key(account, "charges"), reference)
        if charge["succeeded_at"] is not None:
            day = key(account, "statement", datetime.fromisoformat(charge["succeeded_at"]).date().isoformat())
            lines = [m for m in redis.zrange(day, 0, -1) if json.loads(_text(m))["charge_reference"] == reference]
            if lines:
                pipe.zrem(day, *lines)
        pipe.execute()
        return True


STORE = SandboxStore()
