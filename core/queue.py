"""Queueing background jobs from core packages without importing the web app.

The portal registers the real enqueuer (RQ, with the tenant carried in the job's meta) when it
creates the app; core code calls `enqueue()` and stays importable from jobs, CLI and tests.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

_enqueuer: Callable[..., Any] | None = None


def configure(enqueuer: Callable[..., Any]) -> None:
    global _enqueuer
    _enqueuer = enqueuer


def enqueue(queue: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Queue `func(*args)` now. RQ's options pass through (`job_id`, `retry`, ...), and two of ours:
    `at=<datetime>` runs it then instead, through RQ's scheduler; `if_absent=True` (with a
    deterministic `job_id`) keeps a job of that id that is still queued, scheduled or running
    rather than adding a second one."""
    if _enqueuer is None:
        raise RuntimeError("no job queue is configured: create the app first")
    return _enqueuer(queue, func, *args, **kwargs)


def enqueue_at(queue: str, when: datetime, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func(*args)` at `when` (RQ's scheduler moves it to the queue then)."""
    return enqueue(queue, func, *args, at=when, **kwargs)


def schedule_next(
    queue: str,
    func: Callable[..., Any],
    interval: int,
    name: str,
    *,
    after: int | None = None,
    scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> None:
    """Keep a chain of periodic jobs going: make sure `func(slot)` is scheduled for the next slot
    (a multiple of `interval` seconds after now, and after the slot `after` of the job that asks).
    The job id `<name>-<slot>` is deterministic, so any number of callers schedule it once. Best
    effort: a failure is logged, and the next caller tries again. `scope` is entered around the
    enqueue (a platform-wide job is queued in the platform scope)."""
    slot = max(int(time.time()) // interval * interval, after or 0) + interval
    try:
        with scope():
            enqueue(queue, func, slot, job_id=f"{name}-{slot}", if_absent=True, at=datetime.fromtimestamp(slot, UTC))
    except Exception:  # noqa: BLE001  (best effort, see above)
        log.warning("could not schedule %s", name, exc_info=True)
