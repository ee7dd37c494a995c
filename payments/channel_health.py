"""Channel health: a channel account that keeps failing is taken out of routing for a while.

What counts: a call that did not get an answer from the channel (`ChannelUnavailable`: refused,
reset, 5xx before acceptance; `ChannelTimeout`) is a failure. Any answer, a decline included, is
a success: the channel is up. After `THRESHOLD` failures in a row the account is unhealthy for
`COOL_DOWN` seconds; routing drops it with the reason (`payments.routing.Reason.UNHEALTHY`) and
payments fail over to the next candidate. When the cool-down has passed the account is routed
again: its next call is the probe; another failure opens it again at once (the count is still
over the threshold), a success clears the record.

The state lives in Redis, shared by every web and worker process (one hash per account, kept a
day after its last failure). Redis being away never stops a payment: health is then unknown and
every account counts as healthy.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from core import redis as shared_redis

log = logging.getLogger(__name__)

THRESHOLD = 5
COOL_DOWN = 30  # seconds
KEEP = 86_400  # seconds a record is kept after its last failure
PREFIX = "payplat:channel-health:"

# Count a failure; open (or keep open) the account once the count reaches the threshold.
_FAIL = """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'last_error', ARGV[1], 'last_failure_at', ARGV[2])
if failures >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'open_until', tonumber(ARGV[2]) + tonumber(ARGV[4]))
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return failures
"""


@dataclass(frozen=True)
class Health:
    failures: int = 0
    last_error: str = ""
    last_failure_at: float | None = None
    open_until: float | None = None

    def healthy(self, now: float | None = None) -> bool:
        return self.open_until is None or (now if now is not None else time.time()) >= self.open_until

    def describe(self) -> str:
        """Why the account is out of routing, for the route tester and the console."""
        until = datetime.fromtimestamp(self.open_until or 0, UTC).strftime("%H:%M:%S UTC")
        last = f" (last: {self.last_error})" if self.last_error else ""
        return f"{self.failures} failed calls in a row{last}; routed again from {until}"


HEALTHY = Health()


def _redis():
    return shared_redis.connection()


def _key(account_id: uuid.UUID | str) -> str:
    return f"{PREFIX}{account_id}"


def states(account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Health]:
    """The recorded health of each account (absent: no failure on record), in one round trip."""
    ids = list(account_ids)
    if not ids:
        return {}
    try:
        pipe = _redis().pipeline(transaction=False)
        for account_id in ids:
            pipe.hgetall(_key(account_id))
        rows = pipe.execute()
    except Exception:  # noqa: BLE001  (health is advisory: never fail a payment over it)
        log.warning("channel health unknown (Redis unavailable); every channel counts as healthy", exc_info=True)
        return {}
    found = {}
    for account_id, row in zip(ids, rows, strict=True):
        if row:
            found[account_id] = Health(
                failures=int(row.get(b"failures", 0)),
                last_error=row.get(b"last_error", b"").decode(errors="replace"),
                last_failure_at=float(row[b"last_failure_at"]) if b"last_failure_at" in row else None,
                open_until=float(row[b"open_until"]) if b"open_until" in row else None,
            )
    return found


def record_failure(account_id: uuid.UUID, error: str) -> None:
    try:
        _redis().eval(_FAIL, 1, _key(account_id), error[:200], repr(time.time()), THRESHOLD, COOL_DOWN, KEEP)
    except Exception:  # noqa: BLE001
        log.warning("could not record a failure of channel account %s", account_id, exc_info=True)


def record_success(account_id: uuid.UUID, known: Health | None) -> None:
    """The channel answered. Clears the record when one was seen while routing (no round trip
    for the usual healthy account)."""
    if known is None or known.failures == 0:
        return
    try:
        _redis().delete(_key(account_id))
    except Exception:  # noqa: BLE001
        log.warning("could not clear the failures of channel account %s", account_id, exc_info=True)
