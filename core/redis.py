"""The platform's Redis connection for core packages, without importing the web app.

The portal registers how to get the connection when it creates the app (as it does for the job
queue, `core.queue`); `connection()` returns it anywhere: a request, a job, a CLI command.
"""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

_provider: Callable[[], Redis] | None = None


def configure(provider: Callable[[], Redis]) -> None:
    global _provider
    _provider = provider


def connection() -> Redis:
    if _provider is None:
        raise RuntimeError("no Redis is configured: create the app first")
    return _provider()
