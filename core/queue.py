"""Queueing background jobs from core packages without importing the web app.

The portal registers the real enqueuer (RQ, with the tenant carried in the job's meta) when it
creates the app; core code calls `enqueue()` and stays importable from jobs, CLI and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

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
