"""Queueing background jobs from core packages without importing the web app.

The portal registers the real enqueuer (RQ, with the tenant carried in the job's meta) when it
creates the app; core code calls `enqueue()` and stays importable from jobs, CLI and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_enqueuer: Callable[..., Any] | None = None


def configure(enqueuer: Callable[..., Any]) -> None:
    global _enqueuer
    _enqueuer = enqueuer


def enqueue(queue: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if _enqueuer is None:
        raise RuntimeError("no job queue is configured: create the app first")
    return _enqueuer(queue, func, *args, **kwargs)
